"""Query "linear" (served by the five-line server.py) over HTTP and check its answers are affine.

Exits with status 1 on a wrong answer.
"""

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
    metadata = client.get_model_metadata("linear")
    print("inputs:", [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]])
    print("outputs:", [(t["name"], t["datatype"], t["shape"]) for t in metadata["outputs"]])

    x = np.array([[0, 0, 0, 0], [1, 2, 3, 4], [2, 4, 6, 8]], dtype=np.float32)
    item = httpclient.InferInput("input", list(x.shape), "FP32")  # forward(self, input)
    item.set_data_from_numpy(x)
    y = client.infer("linear", [item]).as_numpy("OUTPUT__0")
    print("outputs for 3 rows:\n", y)
    if y.shape != (3, 2) or not np.allclose(y[2] - y[0], 2 * (y[1] - y[0]), atol=1e-5):
        print("WRONG ANSWER", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
