"""Send a request parameter and a forwarded header to "ParamsHeaders" over HTTP."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import tritonclient.http as httpclient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="localhost:8000", help="HTTP address of the server")
    args = parser.parse_args()
    client = httpclient.InferenceServerClient(args.url)
    x = np.ones((2, 3), dtype=np.float32)
    item = httpclient.InferInput("x", list(x.shape), "FP32")
    item.set_data_from_numpy(x)
    result = client.infer(
        "ParamsHeaders", [item], parameters={"scale": 4}, headers={"header_tag": "from-client"}
    )
    y, tag = result.as_numpy("y"), result.as_numpy("tag")
    print("y:", y.tolist(), "tag:", tag.reshape(-1).tolist())
    ok = np.allclose(y, 4) and tag.reshape(-1).tolist() == [b"from-client", b"from-client"]
    print("OK" if ok else "WRONG ANSWER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
