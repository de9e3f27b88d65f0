"""Send floats and bytes to "Identity" over gRPC and check they come back byte for byte."""

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
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    texts = np.array([[b"hello"], ["zażółć".encode()], [b"pad\x00\x00"]], dtype=object)
    inputs = [
        grpcclient.InferInput("values", list(values.shape), "FP32"),
        grpcclient.InferInput("texts", [3, 1], "BYTES"),
    ]
    inputs[0].set_data_from_numpy(values)
    inputs[1].set_data_from_numpy(texts)
    result = client.infer("Identity", inputs)
    ok = (
        np.array_equal(result.as_numpy("values_out"), values)
        and result.as_numpy("texts_out").tolist() == texts.tolist()
    )
    print(result.as_numpy("texts_out").reshape(-1))
    print("OK" if ok else "WRONG ANSWER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
