"""Send 64 single-image requests to "cnn" at once and check every answer.

Each answer must hold 10 probabilities that sum to 1 and the label of the largest one. The
server batches the concurrent requests; the server's metrics show how (see README).
Exits with status 1 on a wrong answer.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import tritonclient.http as httpclient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="localhost:8000", help="HTTP address of the server")
    parser.add_argument("--requests", type=int, default=64)
    args = parser.parse_args()
    client = httpclient.InferenceServerClient(args.url, concurrency=16)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.requests, 1, 3, 32, 32), dtype=np.float32)
    pending = []
    for image in images:
        item = httpclient.InferInput("image", list(image.shape), "FP32")
        item.set_data_from_numpy(image)
        pending.append(client.async_infer("cnn", [item]))
    bad = 0
    for result in (p.get_result() for p in pending):
        probs, label = result.as_numpy("probs"), result.as_numpy("label")
        if probs.shape != (1, 10) or not np.isclose(probs.sum(), 1, atol=1e-4) or label[0, 0] != probs.argmax():
            bad += 1
    stats = client.get_inference_statistics("cnn")["model_stats"][0]
    batches = sum(int(b["compute_infer"]["count"]) for b in stats["batch_stats"])
    print(f"{args.requests} requests answered in {batches} batches")
    if bad:
        print(f"WRONG ANSWER in {bad} responses", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
