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


@dataclasses.dataclass(frozen=True)
class TritonDist:
    """Paths inside the installed nvidia-pytriton distribution."""

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
    """Locate the tritonserver tree of the installed ``nvidia-pytriton`` wheel."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise PyTritonTorchServerError(
            "nvidia-pytriton is not installed; it provides the tritonserver binary: pip install nvidia-pytriton"
        )
    root = pathlib.Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    dist = TritonDist(root)
    if not dist.server_binary.exists():
        raise PyTritonTorchServerError(f"tritonserver binary not found at {dist.server_binary}")
    return dist


def libpython_dir() -> str:
    """Directory of the running interpreter's libpython (the stub must load this one, not the system's)."""
    return str(sysconfig.get_config_var("LIBDIR") or "")
