"""Send a request parameter and an HTTP header to "ParamsHeaders" with tritonclient's HTTP client.

Exits with status 1 on a wrong answer.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import tritonclient.http as httpclient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="localhost:8000", help="HTTP address of the server (host:port)")
    args = parser.parse_args()

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    # (request parameters, HTTP headers, expected y, expected tag)
    cases = [
        ({"scale": 4}, {"header_tag": "sent-by-client"}, x * 4, b"sent-by-client"),
        ({"scale": 0.5}, {}, x * 0.5, b"<no header>"),
        ({}, {"header_tag": "only-a-header", "other": "not forwarded"}, x, b"only-a-header"),
    ]
    failures = 0
    with httpclient.InferenceServerClient(args.url) as client:
        for parameters, headers, want_y, want_tag in cases:
            item = httpclient.InferInput("x", list(x.shape), "FP32")
            item.set_data_from_numpy(x)
            result = client.infer(
                "ParamsHeaders", [item], parameters=parameters or None, headers=headers or None
            )
            y, tag = result.as_numpy("y"), result.as_numpy("tag")
            ok = (
                y is not None
                and tag is not None
                and np.allclose(y, want_y)
                and tag.reshape(-1).tolist() == [want_tag] * x.shape[0]
            )
            failures += not ok
            tags = None if tag is None else tag.reshape(-1).tolist()
            print(
                f"{'ok ' if ok else 'BAD'} parameters={parameters} headers={headers} -> y[0]={y[0] if y is not None else None} tag={tags}"
            )
    print("OK" if not failures else "WRONG ANSWER")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
