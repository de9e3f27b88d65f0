"""Query both models of the multiple-models example with tritonclient's gRPC client.

Exits with status 1 on a wrong answer.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import tritonclient.grpc as grpcclient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="localhost:8001", help="gRPC address of the server (host:port)")
    args = parser.parse_args()

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    failures = 0
    with grpcclient.InferenceServerClient(args.url) as client:
        for model, factor in (("Multiply2", 2), ("Multiply3", 3)):
            if not client.is_model_ready(model):
                print(f"BAD {model} is not ready")
                failures += 1
                continue
            item = grpcclient.InferInput("x", list(x.shape), "FP32")
            item.set_data_from_numpy(x)
            y = client.infer(model, [item]).as_numpy("y")
            ok = y is not None and np.array_equal(y, x * factor)
            failures += not ok
            print(f"{'ok ' if ok else 'BAD'} {model}: {None if y is None else y.tolist()}")
    print("OK" if not failures else "WRONG ANSWER")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
