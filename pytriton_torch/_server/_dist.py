"""Where the tritonserver binary, Python backend and stubs of the ``nvidia-pytriton`` wheel live.

Only the files are used here; the ``pytriton`` package is imported only by ``pytriton_torch.client``
(PyTriton's clients, on first use).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import sys
import sysconfig

from ..exceptions import PyTritonTorchServerError
from . import _fetch


@dataclasses.dataclass(frozen=True)
class TritonDist:
    """Paths inside the nvidia-pytriton wheel's tritonserver tree (installed, or unpacked in the cache).

    Both layouts keep the wheel's ``pytriton/tritonserver`` beside ``nvidia_pytriton.libs``.
    """

    root: pathlib.Path

    @property
    def server_binary(self) -> pathlib.Path:
        return self.root / "bin" / "tritonserver"

    @property
    def python_backend(self) -> pathlib.Path:
        return self.root / "backends" / "python"

    @property
    def caches(self) -> pathlib.Path:
        return self.root / "caches"

    @property
    def libs(self) -> pathlib.Path:
        """The wheel's bundled shared libraries (auditwheel's ``nvidia_pytriton.libs``)."""
        return self.root.parent.parent / "nvidia_pytriton.libs"

    def stub_for(self, version: tuple[int, int] | None = None) -> pathlib.Path:
        """The Python-backend stub built for ``version`` (default: the running interpreter)."""
        major, minor = version or sys.version_info[:2]
        stub = self.root / "python_backend_stubs" / f"{major}.{minor}" / "triton_python_backend_stub"
        if not stub.exists():
            available = sorted(p.name for p in (self.root / "python_backend_stubs").iterdir())
            raise PyTritonTorchServerError(
                f"no Python-backend stub for Python {major}.{minor} in {stub.parent.parent}; "
                f"the installed nvidia-pytriton has stubs for {', '.join(available)}"
            )
        return stub


def find_dist() -> TritonDist:
    """Locate the tritonserver tree: the installed ``nvidia-pytriton`` wheel, else the per-user cache.

    The cache is filled by ``pytriton-torch fetch-server`` (see ``_fetch``); nothing is downloaded here.
    """
    spec = importlib.util.find_spec("pytriton")
    if spec is not None and spec.submodule_search_locations:
        root = pathlib.Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
        dist = TritonDist(root)
        if not dist.server_binary.exists():
            raise PyTritonTorchServerError(f"tritonserver binary not found at {dist.server_binary}")
        return dist
    cached = _fetch.cached_server_root()
    if cached is not None:
        return TritonDist(cached)
    try:
        where = f" and the server cache {_fetch.cache_dir()} is empty"
    except PyTritonTorchServerError:
        where = ""
    raise PyTritonTorchServerError(
        f"tritonserver {_fetch.SERVER_VERSION} not found: nvidia-pytriton is not installed{where}. Run "
        f"`pytriton-torch fetch-server` once (downloads the nvidia-pytriton {_fetch.WHEEL_VERSION} wheel, "
        "about 55 MB, and unpacks its server files; offline: --wheel FILE), or pip install "
        f"'nvidia-pytriton=={_fetch.WHEEL_VERSION}' (pins numpy<2)"
    )


def libpython_dir() -> str:
    """Directory of the running interpreter's libpython (the stub must load this one, not the system's)."""
    return str(sysconfig.get_config_var("LIBDIR") or "")
