#!/usr/bin/env python3
"""One round trip through a served model: can this environment's server path exchange tensors.

Used by ``scripts/gpu_check.sh`` before the GPU tests: under NumPy 2 the Python-backend stub of
nvidia-pytriton 0.7 (built with a pybind11 that predates NumPy 2) hands back empty tensors, and
every test would then fail with ``cannot reshape array of size 0``. Prints one JSON line (numpy and
torch versions, whether FP32 and BYTES came back intact, the error if not) and exits 0 only when
both came back intact.

Usage::

    python scripts/gpu_probe.py [--torch]   # --torch: also check torch imports next to this numpy
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any

import numpy as np


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _torch_report() -> dict[str, Any]:
    try:
        import torch

        roundtrip = torch.from_numpy(np.arange(4, dtype=np.float32)).mul(2).numpy()
        return {
            "torch": torch.__version__,
            "torch_cuda": torch.cuda.is_available(),
            "torch_numpy_ok": bool((roundtrip == np.arange(4) * 2).all()),
        }
    except Exception as exc:
        return {"torch_error": f"{type(exc).__name__}: {exc}"[:500]}


def probe(with_torch: bool) -> dict[str, Any]:
    """Serve an echo model (FP32 and BYTES) and query it once over HTTP."""
    import tritonclient.http as httpclient

    from pytriton_torch import Tensor, Triton, TritonConfig
    from pytriton_torch.decorators import batch

    report: dict[str, Any] = {"numpy": np.__version__, "python": sys.version.split()[0]}
    if with_torch:
        report.update(_torch_report())

    @batch
    def echo(x: np.ndarray, s: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": x * 2, "t": s}

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    s = np.array([[b"probe"], [b"two\x00"]], dtype=object)
    config = TritonConfig(http_port=_free_port(), grpc_port=_free_port(), metrics_port=_free_port())
    try:
        with Triton(config=config) as triton:
            inputs = [Tensor(name="x", dtype=np.float32, shape=(-1,)), Tensor(name="s", dtype=bytes, shape=(1,))]
            outputs = [Tensor(name="y", dtype=np.float32, shape=(-1,)), Tensor(name="t", dtype=bytes, shape=(1,))]
            triton.bind("echo", echo, inputs, outputs)
            client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
            items = [httpclient.InferInput("x", list(x.shape), "FP32"), httpclient.InferInput("s", [2, 1], "BYTES")]
            items[0].set_data_from_numpy(x)
            items[1].set_data_from_numpy(s)
            result = client.infer("echo", items)
            report["fp32_ok"] = bool(np.array_equal(result.as_numpy("y"), x * 2))
            report["bytes_ok"] = result.as_numpy("t").tolist() == s.tolist()
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"[:1000]
    # torch must work beside this numpy where it is installed (the GPU tests need both).
    error = report.get("torch_error", "")
    torch_ok = "No module named 'torch'" in error or (not error and report.get("torch_numpy_ok", not with_torch))
    report["ok"] = bool(report.get("fp32_ok") and report.get("bytes_ok") and torch_ok)
    return report


def main() -> int:
    """Run the probe and print its JSON report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch", action="store_true", help="also check that torch works with this numpy")
    report = probe(parser.parse_args().torch)
    print(json.dumps(report), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
