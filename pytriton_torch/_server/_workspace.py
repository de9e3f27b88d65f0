"""A private (0700) working folder for one server: model store, backend tree, sockets."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

from ._dist import TritonDist


class Workspace:
    """Private folder holding everything one ``Triton`` instance writes to disk.

    Layout::

        <root>/models/<name>/1/model.py   proxy shim + config.pbtxt per bound model
        <root>/backends/python/            links to the bundled backend and the right stub
        <root>/ipc/                        ZeroMQ ipc sockets
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._owned = path is None
        if path is None:
            self.root = pathlib.Path(tempfile.mkdtemp(prefix="pytriton_torch-"))
        else:
            self.root = pathlib.Path(path).resolve()
            self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.models = self.root / "models"
        self.backends = self.root / "backends"
        self.ipc = self.root / "ipc"
        for folder in (self.models, self.backends / "python", self.ipc):
            folder.mkdir(parents=True, exist_ok=True)

    def link_backend(self, dist: TritonDist) -> None:
        """Point the workspace's python backend at the bundled one and at this Python's stub."""
        target = self.backends / "python"
        links = {
            "libtriton_python.so": dist.python_backend / "libtriton_python.so",
            "triton_python_backend_utils.py": dist.python_backend / "triton_python_backend_utils.py",
            "triton_python_backend_stub": dist.stub_for(),
        }
        for name, source in links.items():
            link = target / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(source)

    def remove(self) -> None:
        """Delete the folder if this object created it, else only what it put there."""
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            for folder in (self.models, self.backends, self.ipc):
                shutil.rmtree(folder, ignore_errors=True)
