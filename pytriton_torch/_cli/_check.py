"""``pytriton-torch check``: is this machine able to run pytriton_torch? Each finding says what to do."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import pathlib
import platform
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"
MIN_GLIBC = (2, 35)
MIN_SHM_BYTES = 256 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Finding:
    """One line of the report: ``status`` is ok, warn, fail or info; ``fix`` says what to do about it."""

    name: str
    status: str
    detail: str
    fix: str = ""


def run_checks(
    ports: Mapping[str, tuple[str, int]], shm_path: str = "/dev/shm", *, start: bool = False
) -> list[Finding]:
    """Every check, in order; a check that raises becomes a ``fail`` finding naming the exception.

    ``start``: finally start tritonserver with a test model and send it a request (when every
    other check passed).
    """
    checks: list[Callable[[], Finding]] = [
        check_platform,
        check_glibc,
        check_python,
        check_libpython,
        check_tritonserver,
        check_stub,
        lambda: check_shm(shm_path),
        lambda: check_ports(ports),
        check_torch,
        check_cuda,
        check_tritonclient,
        check_preload,
    ]
    findings = []
    for check in checks:
        try:
            findings.append(check())
        except Exception as exc:  # a broken check must not hide the others
            name = getattr(check, "__name__", "check").removeprefix("check_")
            findings.append(Finding(name, FAIL, f"the check itself failed: {type(exc).__name__}: {exc}"))
    if start:
        if any(f.status == FAIL for f in findings):
            findings.append(Finding("start", INFO, "not tried: fix the failures above first"))
        else:
            findings.append(check_start(ports))
    return findings


def check_platform() -> Finding:
    if sys.platform != "linux":
        return Finding(
            "platform",
            FAIL,
            f"{sys.platform}: tritonserver runs on Linux only",
            "use Linux or a Linux container",
        )
    machine = platform.machine()
    return Finding("platform", OK, f"Linux {platform.release()} {machine}")


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the C library, or None when it is not glibc."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return None
    parts = text.split()
    if len(parts) != 2 or parts[0] != "glibc":
        return None
    major, _, minor = parts[1].partition(".")
    return int(major), int(minor.split(".")[0] or 0)


def check_glibc() -> Finding:
    version = glibc_version()
    if version is None:
        return Finding(
            "glibc", FAIL, "not a glibc system (musl/Alpine?)", "use a glibc-based image, e.g. Debian/Ubuntu"
        )
    text = f"glibc {version[0]}.{version[1]}"
    if version < MIN_GLIBC:
        return Finding(
            "glibc",
            FAIL,
            f"{text}; the tritonserver binary in nvidia-pytriton needs >= 2.35",
            "use Ubuntu 22.04+ / Debian 12+ or a python:3.x-bookworm image",
        )
    return Finding("glibc", OK, text)


def check_python() -> Finding:
    version = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    return Finding("python", OK, f"Python {version} ({sys.executable})")


def check_libpython() -> Finding:
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    name = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY") or ""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        # Statically linked interpreters still work when the matching shared library is installed.
        candidates = sorted(
            pathlib.Path(libdir).glob(f"libpython{sys.version_info.major}.{sys.version_info.minor}*.so*")
        )
        if not candidates:
            return Finding(
                "libpython",
                FAIL,
                f"this Python is built without a shared libpython and none is in {libdir}; the Python-backend stub needs one",
                "install the shared library (e.g. apt install libpython3.X) or build Python with --enable-shared "
                "(pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared)",
            )
        return Finding("libpython", OK, f"{candidates[0]}")
    path = pathlib.Path(libdir) / name
    if not path.exists():
        return Finding(
            "libpython", WARN, f"{path} not found", "check that LIBDIR of this Python holds its libpython"
        )
    return Finding("libpython", OK, str(path))


def check_tritonserver() -> Finding:
    from .._server import _fetch
    from .._server._dist import find_dist
    from ..exceptions import PyTritonTorchServerError

    try:
        dist = find_dist()
    except PyTritonTorchServerError as exc:
        return Finding(
            "tritonserver",
            FAIL,
            exc.message,
            "pytriton-torch fetch-server, or pip install 'nvidia-pytriton>=0.7,<0.8'",
        )
    if not os.access(dist.server_binary, os.X_OK):
        return Finding(
            "tritonserver", FAIL, f"{dist.server_binary} is not executable", "reinstall nvidia-pytriton"
        )
    if dist.root.is_relative_to(_fetch.cache_root()):
        source = "fetched by pytriton-torch fetch-server"
    else:
        source = f"nvidia-pytriton {importlib.metadata.version('nvidia-pytriton')}"
    return Finding("tritonserver", OK, f"{dist.server_binary} ({source})")


def check_stub() -> Finding:
    from .._server._dist import find_dist
    from ..exceptions import PyTritonTorchServerError

    try:
        stub = find_dist().stub_for()
    except PyTritonTorchServerError as exc:
        return Finding("stub", FAIL, exc.message, "use a Python version listed there")
    return Finding("stub", OK, str(stub))


def check_shm(path: str = "/dev/shm") -> Finding:
    try:
        stats = os.statvfs(path)
    except OSError as exc:
        return Finding("shm", FAIL, f"{path}: {exc.strerror}", "mount a tmpfs on /dev/shm")
    total, free = stats.f_blocks * stats.f_frsize, stats.f_bavail * stats.f_frsize
    text = f"{path}: {_mib(free)} free of {_mib(total)}"
    if total < MIN_SHM_BYTES:
        return Finding(
            "shm",
            WARN,
            f"{text}; tensors and Triton's Python backend live there",
            "give the container more: docker run --shm-size=1g, or an emptyDir with medium: Memory on /dev/shm in Kubernetes",
        )
    return Finding("shm", OK, text)


def check_ports(ports: Mapping[str, tuple[str, int]]) -> Finding:
    from .._server._process import check_ports_free
    from ..exceptions import PyTritonTorchPortInUseError

    text = ", ".join(f"{name} {address}:{port}" for name, (address, port) in ports.items())
    try:
        check_ports_free(ports)
    except PyTritonTorchPortInUseError as exc:
        return Finding(
            "ports",
            FAIL,
            exc.message.removeprefix("cannot start tritonserver: "),
            "stop the other server or pick ports with --http-port/--grpc-port/--metrics-port",
        )
    return Finding("ports", OK, f"free: {text}")


def check_torch() -> Finding:
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return Finding(
            "torch",
            WARN,
            "not installed; only plain Python functions can be served",
            "pip install torch==2.13.0 (any >= 2.1)",
        )
    major, minor = (int(p) for p in version.split("+")[0].split(".")[:2])
    if (major, minor) < (2, 1):
        return Finding(
            "torch", WARN, f"torch {version}; bind_module needs >= 2.1", "pip install -U 'torch>=2.1'"
        )
    return Finding("torch", OK, f"torch {version}")


def check_cuda() -> Finding:
    try:
        import torch
    except ImportError:
        return Finding("cuda", INFO, "torch not installed; GPUs not checked")
    if not torch.cuda.is_available():
        built = torch.version.cuda
        detail = "no GPU visible; models run on the CPU" + ("" if built else " (CPU-only torch build)")
        return Finding("cuda", INFO, detail)
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return Finding("cuda", OK, f"CUDA {torch.version.cuda}: {len(names)} GPU(s): {', '.join(names)}")


def check_tritonclient() -> Finding:
    try:
        version = importlib.metadata.version("tritonclient")
    except importlib.metadata.PackageNotFoundError:
        return Finding(
            "tritonclient",
            WARN,
            "not installed; `pytriton-torch infer` needs it",
            "pip install 'tritonclient[all]'",
        )
    return Finding("tritonclient", OK, f"tritonclient {version}")


def check_preload() -> Finding:
    """The C library loaded into tritonserver: already built, or a compiler to build it at start."""
    from .._server import _preload

    library = _preload.existing_library()
    if library is not None:
        return Finding("preload library", OK, f"built: {library}")
    cc = _preload.compiler()
    if cc is not None:
        return Finding("preload library", OK, f"built with {cc[0]} at the first start (about 0.4 s, cached)")
    return Finding(
        "preload library",
        FAIL,
        "not built, and no C compiler to build it (cc, gcc or clang on PATH, or $CC)",
        "install a C compiler (`apt-get install gcc`), or run `pytriton-torch build` once where one is installed",
    )


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.0f} MiB"


def check_start(ports: Mapping[str, tuple[str, int]]) -> Finding:
    """Start tritonserver with a one-line model and send it one request: the end-to-end proof."""
    import numpy as np

    from ..exceptions import PyTritonTorchError
    from ..model_config import ModelConfig, Tensor
    from ..triton import Triton, TritonConfig

    config = TritonConfig(
        http_address=ports["http"][0],
        http_port=ports["http"][1],
        grpc_address=ports["grpc"][0],
        grpc_port=ports["grpc"][1],
        metrics_port=ports["metrics"][1],
        startup_timeout_s=60,
    )

    def echo(requests: list[Any]) -> list[dict[str, Any]]:
        return [{"y": request["x"]} for request in requests]

    started = time.monotonic()
    try:
        with Triton(config=config) as triton:
            triton.bind(
                "pytriton_torch_check",
                echo,
                inputs=[Tensor(name="x", dtype=np.float32, shape=(-1,))],
                outputs=[Tensor(name="y", dtype=np.float32, shape=(-1,))],
                config=ModelConfig(max_batch_size=1),
            )
            body = json.dumps(
                {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
            )
            request = urllib.request.Request(
                f"{triton.http_url}/v2/models/pytriton_torch_check/infer", data=body.encode(), method="POST"
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.loads(response.read())
            data = answer["outputs"][0]["data"]
            if data != [1.0, 2.0]:
                return Finding("start", FAIL, f"the test model answered {data}, expected [1.0, 2.0]")
    except PyTritonTorchError as exc:
        return Finding(
            "start",
            FAIL,
            exc.message,
            "see the lines above for the cause; `--log-level debug` shows tritonserver's log",
        )
    except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
        return Finding("start", FAIL, f"the test request failed: {exc}")
    return Finding(
        "start", OK, f"served a test model and answered a request in {time.monotonic() - started:.1f}s"
    )
