"""Query "Linear" with PyTriton's ModelClient and check that the answers come from an affine map.

The weights are random, so the client cannot know the exact outputs; it checks instead that
f(x + y) = f(x) + f(y) - f(0) and f(2x) = 2 f(x) - f(0), which holds for every nn.Linear.
Exits with status 1 on a wrong answer.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from pytriton.client import ModelClient


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url",
        default="localhost:8000",
        help="server address; HTTP by default, prefix with grpc:// for gRPC (e.g. grpc://localhost:8001)",
    )
    parser.add_argument("--init-timeout-s", type=float, default=60.0, help="how long to wait for the model")
    args = parser.parse_args()

    rng = np.random.default_rng(seed=1)
    x, y = rng.standard_normal((2, 20), dtype=np.float32)
    zero = np.zeros(20, dtype=np.float32)
    data = np.stack([zero, x, y, x + y, 2 * x])  # one batch of 5 rows

    with ModelClient(args.url, "Linear", init_timeout_s=args.init_timeout_s) as client:
        result = client.infer_batch(data=data)["result"]

    print(f"sent {data.shape}, got {result.shape} {result.dtype}")
    if result.shape != (5, 30) or result.dtype != np.float32:
        print("WRONG ANSWER: expected a float32 array of shape (5, 30)", file=sys.stderr)
        return 1
    f0, fx, fy, fxy, f2x = result
    checks = {
        "f(x+y) == f(x) + f(y) - f(0)": np.allclose(fxy, fx + fy - f0, atol=1e-4),
        "f(2x) == 2 f(x) - f(0)": np.allclose(f2x, 2 * fx - f0, atol=1e-4),
        "f(x) != f(0) (not a constant)": not np.allclose(fx, f0),
    }
    for name, ok in checks.items():
        print(f"{'ok ' if ok else 'BAD'} {name}")
    if not all(checks.values()):
        print("WRONG ANSWER", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
