"""Query "AddSubOptional" with PyTriton's ModelClient, without and with the optional input."""

from __future__ import annotations

import argparse
import sys

import numpy as np
from pytriton.client import ModelClient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="localhost:8000", help="HTTP address of the server")
    args = parser.parse_args()
    a = np.full((2, 3), 5, dtype=np.float32)
    b = np.full((2, 3), 2, dtype=np.float32)
    with ModelClient(args.url, "AddSubOptional", init_timeout_s=60) as client:
        plain = client.infer_batch(a=a, b=b)
        weighted = client.infer_batch(a=a, b=b, weight=np.full((2, 1), 10, dtype=np.float32))
    ok = (
        np.allclose(plain["add"], 7)
        and np.allclose(plain["sub"], 3)
        and np.allclose(weighted["add"], 70)
        and np.allclose(weighted["sub"], 30)
    )
    print("without weight:", plain["add"][0], "with weight 10:", weighted["add"][0])
    print("OK" if ok else "WRONG ANSWER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
