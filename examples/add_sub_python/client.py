"""Send one batch to "AddSub" with tritonclient's HTTP client and check both outputs.

Exits with status 1 on a wrong answer.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import tritonclient.http as httpclient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="localhost:8000", help="HTTP address of the server (host:port)")
    args = parser.parse_args()

    rng = np.random.default_rng(seed=0)
    a = rng.random((8, 5), dtype=np.float32)  # a batch of 8 rows, 5 values each
    b = rng.random((8, 5), dtype=np.float32)
    inputs = [
        httpclient.InferInput("a", list(a.shape), "FP32"),
        httpclient.InferInput("b", list(b.shape), "FP32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    outputs = [httpclient.InferRequestedOutput("add"), httpclient.InferRequestedOutput("sub")]

    with httpclient.InferenceServerClient(args.url) as client:
        result = client.infer("AddSub", inputs, outputs=outputs)
    add, sub = result.as_numpy("add"), result.as_numpy("sub")

    print("a[0]:  ", a[0])
    print("b[0]:  ", b[0])
    print("add[0]:", None if add is None else add[0])
    print("sub[0]:", None if sub is None else sub[0])
    ok = (
        add is not None
        and sub is not None
        and add.shape == a.shape
        and sub.shape == a.shape
        and np.allclose(add, a + b)
        and np.allclose(sub, a - b)
    )
    print("OK" if ok else "WRONG ANSWER: expected add == a + b and sub == a - b")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
