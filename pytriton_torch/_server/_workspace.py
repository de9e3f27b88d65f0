"""A private (0700) working folder for one server: model store, backend tree, sockets."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import shutil
import tempfile

from .._channel._shm import pid_alive
from ..exceptions import PyTritonTorchValidationError
from ._dist import TritonDist

LOGGER = logging.getLogger("pytriton_torch")

PREFIX = "pytriton_torch-"
OWNER_FILE = "owner.json"
# A worker socket is ``<root>/ipc/<12 hex digits>.<instance>`` and AF_UNIX paths hold at most 107
# bytes; instance numbers of repository models reach ``version * 10000 + i`` (9 digits allowed).
SOCKET_PATH_MAX = 107
_SOCKET_TAIL = len("/ipc/") + 12 + 1 + 9
ROOT_MAX = SOCKET_PATH_MAX - _SOCKET_TAIL


def check_root_length(path: str | os.PathLike[str] | None) -> None:
    """Raise PyTritonTorchValidationError when sockets under ``path`` would not fit AF_UNIX paths.

    ``None`` checks the default: a folder ``pytriton_torch-<pid>-<8 chars>`` in the temp folder.
    Creates nothing.
    """
    if path is None:
        root = os.path.join(tempfile.gettempdir(), f"{PREFIX}{os.getpid()}-xxxxxxxx")
        hint = "set TMPDIR to a shorter folder or give Triton(workspace=...) a short path"
    else:
        root = str(pathlib.Path(path).resolve())
        hint = "give a shorter path, e.g. a folder under /tmp"
    length = len(os.fsencode(root))
    if length > ROOT_MAX:
        raise PyTritonTorchValidationError(
            f"workspace {root!r} is {length} bytes long; at most {ROOT_MAX} bytes fit, because the "
            f"model sockets inside it must stay within the {SOCKET_PATH_MAX}-byte limit of Unix socket "
            f"paths: {hint}"
        )


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def remove_stale_workspaces() -> int:
    """Delete default workspaces left by servers whose owning process is gone (SIGKILL, ``os._exit``).

    Only folders ``<tmp>/pytriton_torch-*`` of this user that hold our owner record, written in this
    pid namespace, for a pid that no longer runs. Returns how many were removed.
    """
    removed = 0
    uid, namespace = os.getuid(), _pid_namespace()
    for folder in pathlib.Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            info = folder.lstat()
            if not folder.is_dir() or folder.is_symlink() or info.st_uid != uid:
                continue
            fd = os.open(folder / OWNER_FILE, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd) as record:
                owner = json.load(record)
            pid = int(owner["pid"])
            if int(owner["pid_namespace"]) != namespace or pid == os.getpid() or pid_alive(pid):
                continue
            shutil.rmtree(folder)
            removed += 1
            LOGGER.info("removed the workspace %s of a server that was killed (pid %d)", folder, pid)
    return removed


class Workspace:
    """Private folder holding everything one ``Triton`` instance writes to disk.

    Layout::

        <root>/models/<name>/1/model.py   proxy shim + config.pbtxt per bound model
        <root>/backends/python/            links to the bundled backend and the right stub
        <root>/ipc/                        worker sockets
        <root>/owner.json                  owner pid (default temporary workspaces only)
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        check_root_length(path)
        self._owned = path is None
        if path is None:
            self.root = pathlib.Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
            # Who made it: a later start removes it once this process is gone (see above).
            owner = {"pid": os.getpid(), "pid_namespace": _pid_namespace()}
            (self.root / OWNER_FILE).write_text(json.dumps(owner))
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

    def link_native_backend(self, library: pathlib.Path) -> None:
        """Put our native backend where Triton looks for ``backend: "pytriton_torch"``."""
        target = self.backends / "pytriton_torch"
        target.mkdir(exist_ok=True)
        link = target / "libtriton_pytriton_torch.so"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(library)

    def remove(self) -> None:
        """Delete the folder if this object created it, else only what it put there."""
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            for folder in (self.models, self.backends, self.ipc):
                shutil.rmtree(folder, ignore_errors=True)
