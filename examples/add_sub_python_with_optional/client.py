"""Query "AddSubOptional" with PyTriton's ModelClient, with every combination of the optional inputs.

Exits with status 1 on a wrong answer.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from pytriton.client import ModelClient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--url",
        default="localhost:8000",
        help="server address; HTTP by default, prefix with grpc:// for gRPC (e.g. grpc://localhost:8001)",
    )
    parser.add_argument("--init-timeout-s", type=float, default=60.0, help="how long to wait for the model")
    args = parser.parse_args()

    rows = 3
    a = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
    b = np.ones((rows, 4), dtype=np.float32)

    def column(value: float) -> np.ndarray:  # one value per row: shape (rows, 1)
        return np.full((rows, 1), value, dtype=np.float32)

    # (extra inputs, expected scale, expected offset)
    cases = [
        ({}, 1.0, 0.0),
        ({"offset": column(10)}, 1.0, 10.0),
        ({"scale": column(3)}, 3.0, 0.0),
        ({"offset": column(-1), "scale": column(0.5)}, 0.5, -1.0),
    ]
    failures = 0
    with ModelClient(args.url, "AddSubOptional", init_timeout_s=args.init_timeout_s) as client:
        for extra, scale, offset in cases:
            result = client.infer_batch(a=a, b=b, **extra)
            ok = np.allclose(result["add"], (a + b) * scale + offset) and np.allclose(
                result["sub"], (a - b) * scale + offset
            )
            failures += not ok
            sent = (
                ", ".join(f"{name}={value[0, 0]:g}" for name, value in extra.items()) or "no optional inputs"
            )
            print(f"{'ok ' if ok else 'BAD'} {sent:24} add[0]={result['add'][0]} sub[0]={result['sub'][0]}")
    print("OK" if not failures else f"WRONG ANSWER in {failures} case(s)")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
