"""Query the "Linear" model over gRPC and check the answer's shape and dtype."""

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
    data = np.random.default_rng(0).random((4, 20), dtype=np.float32)
    item = grpcclient.InferInput("data", list(data.shape), "FP32")
    item.set_data_from_numpy(data)
    result = client.infer("Linear", [item]).as_numpy("result")
    print(result)
    if result is None or result.shape != (4, 30) or result.dtype != np.float32:
        print(
            f"unexpected result: {None if result is None else (result.shape, result.dtype)}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
