"""Send float64 values and raw bytes to "Identity" over gRPC and check they come back unchanged.

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

    values = np.random.default_rng(seed=0).standard_normal((4, 6))  # float64
    # dtype=object keeps every byte; a fixed-width np.bytes_ array would drop trailing NULs
    blobs = np.array(
        [
            [b"plain ascii"],
            ["zażółć gęślą jaźń".encode()],
            [b"\xff\xfe not utf-8"],
            [b"trailing NULs\x00\x00"],
        ],
        dtype=object,
    )
    inputs = [
        grpcclient.InferInput("values", list(values.shape), "FP64"),
        grpcclient.InferInput("blobs", list(blobs.shape), "BYTES"),
    ]
    inputs[0].set_data_from_numpy(values)
    inputs[1].set_data_from_numpy(blobs)

    with grpcclient.InferenceServerClient(args.url) as client:
        result = client.infer("Identity", inputs)
    values_out, blobs_out = result.as_numpy("values_out"), result.as_numpy("blobs_out")

    for blob in [] if blobs_out is None else blobs_out.reshape(-1):
        print(repr(blob))
    ok = (
        values_out is not None
        and blobs_out is not None
        and values_out.dtype == np.float64
        and np.array_equal(values_out, values)
        and blobs_out.tolist() == blobs.tolist()
    )
    print("OK" if ok else "WRONG ANSWER: the outputs differ from the inputs")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
