"""Query "embedder" over gRPC and check its three named outputs against each other.

Exits with status 1 on a wrong answer.
"""

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
    outputs = {o.name: (o.datatype, list(o.shape)) for o in client.get_model_metadata("embedder").outputs}
    print("outputs:", outputs)
    features = np.random.default_rng(0).standard_normal((3, 8), dtype=np.float32)
    item = grpcclient.InferInput("features", list(features.shape), "FP32")
    item.set_data_from_numpy(features)
    result = client.infer("embedder", [item])
    embedding, norm, top = (result.as_numpy(name) for name in ("embedding", "norm", "top"))
    checks = {
        "outputs named by the dict keys": set(outputs) == {"embedding", "norm", "top"},
        "embeddings have unit length": np.allclose(np.linalg.norm(embedding, axis=1), 1, atol=1e-5),
        "norm is the input's norm": np.allclose(norm[:, 0], np.linalg.norm(features, axis=1), atol=1e-4),
        "top holds the largest entries": bool(np.all(top[:, 0] == embedding.argmax(axis=1))),
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
