"""Send a batch to "AddSub" over HTTP and check both outputs."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import tritonclient.http as httpclient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="localhost:8000", help="HTTP address of the server")
    args = parser.parse_args()
    client = httpclient.InferenceServerClient(args.url)
    rng = np.random.default_rng(0)
    a = rng.random((8, 5), dtype=np.float32)
    b = rng.random((8, 5), dtype=np.float32)
    inputs = [
        httpclient.InferInput("a", list(a.shape), "FP32"),
        httpclient.InferInput("b", list(b.shape), "FP32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer("AddSub", inputs)
    ok = np.allclose(result.as_numpy("add"), a + b) and np.allclose(result.as_numpy("sub"), a - b)
    print("add:", result.as_numpy("add")[0], "sub:", result.as_numpy("sub")[0])
    print("OK" if ok else "WRONG ANSWER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
