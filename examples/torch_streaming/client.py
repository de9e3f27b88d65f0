"""Open a gRPC stream to "count_up" and check the values arrive one by one, in order.

Exits with status 1 on a wrong answer.
"""

from __future__ import annotations

import argparse
import queue
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="localhost:8001", help="gRPC address of the server")
    args = parser.parse_args()
    answers: queue.Queue[Any] = queue.Queue()
    client = grpcclient.InferenceServerClient(args.url)
    client.start_stream(callback=lambda result, error: answers.put(error or result))
    start = grpcclient.InferInput("start", [1, 1], "INT64")
    start.set_data_from_numpy(np.array([[10]], dtype=np.int64))
    steps = grpcclient.InferInput("steps", [1, 1], "INT32")
    steps.set_data_from_numpy(np.array([[5]], dtype=np.int32))
    client.async_stream_infer("count_up", [start, steps])
    values = []
    for _ in range(5):
        answer = answers.get(timeout=30)
        if isinstance(answer, Exception):
            print(f"error: {answer}", file=sys.stderr)
            return 1
        values.append(int(answer.as_numpy("value")[0, 0]))
        print("received", values[-1])
    client.stop_stream()
    if values != [10, 11, 12, 13, 14]:
        print(f"WRONG ANSWER: {values}", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
