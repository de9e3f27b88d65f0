"""Query both models of the example repository over HTTP and check the answers.

Exits with status 1 on a wrong answer.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import tritonclient.http as httpclient


def infer(
    client: httpclient.InferenceServerClient, model: str, inputs: dict[str, np.ndarray]
) -> httpclient.InferResult:
    tensors = []
    for name, array in inputs.items():
        tensor = httpclient.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return client.infer(model, tensors)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="localhost:8000", help="HTTP address of the server (host:port)")
    args = parser.parse_args()
    rng = np.random.default_rng(seed=0)

    with httpclient.InferenceServerClient(args.url) as client:
        a = rng.random((3, 5), dtype=np.float32)
        b = rng.random((3, 5), dtype=np.float32)
        result = infer(client, "addsub_torchscript", {"INPUT0": a, "INPUT1": b})
        added, subtracted = result.as_numpy("OUTPUT__0"), result.as_numpy("OUTPUT__1")
        print("addsub_torchscript OUTPUT__0[0]:", added[0])
        print("addsub_torchscript OUTPUT__1[0]:", subtracted[0])

        features = rng.random((4, 4), dtype=np.float32)
        probabilities = infer(client, "model_directory", {"INPUT0": features}).as_numpy("OUTPUT0")
        print("model_directory OUTPUT0:\n", probabilities)

    ok = (
        np.allclose(added, a + b)
        and np.allclose(subtracted, a - b)
        and probabilities.shape == (4, 3)
        and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    )
    print("OK" if ok else "WRONG ANSWER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
