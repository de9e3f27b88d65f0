"""Serve this folder as a Triton model repository of PyTorch models.

Same as ``pytriton-torch serve examples/model_repository``. Ports come from TritonConfig's
defaults or the ``PYTRITON_TRITON_CONFIG_*_PORT`` environment variables.
"""

from __future__ import annotations

import logging
import pathlib
import sys

from pytriton_torch import Triton

HERE = pathlib.Path(__file__).resolve().parent


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with Triton() as triton:
        report = triton.load_repository(HERE)
        for name, reason in report.failed.items():
            print(f"model {name} failed: {reason}", file=sys.stderr)
        if not report.loaded:
            return 1
        print(f"serving {', '.join(report.loaded)} on {triton.http_url}")
        triton.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
