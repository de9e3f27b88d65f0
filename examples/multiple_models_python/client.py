"""Query both models of the multiple-models example over gRPC."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import tritonclient.grpc as grpcclient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="localhost:8001", help="gRPC address of the server")
    args = parser.parse_args()
    client = grpcclient.InferenceServerClient(args.url)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    ok = True
    for model, factor in (("Multiply2", 2), ("Multiply3", 3)):
        item = grpcclient.InferInput("x", list(x.shape), "FP32")
        item.set_data_from_numpy(x)
        y = client.infer(model, [item]).as_numpy("y")
        print(model, y.tolist())
        ok = ok and np.array_equal(y, x * factor)
    print("OK" if ok else "WRONG ANSWER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
