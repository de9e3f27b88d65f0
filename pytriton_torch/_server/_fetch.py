"""Fetch tritonserver's files from the pinned ``nvidia-pytriton`` wheel into a per-user cache.

Installing ``nvidia-pytriton`` pins ``numpy<2``; only the files of its ``pytriton/tritonserver/`` tree
and its auditwheel folder ``nvidia_pytriton.libs/`` are needed, so ``pytriton-torch fetch-server``
downloads the wheel once (or takes a wheel file given offline), checks its sha256 against the digest
pinned here and unpacks those two trees, keeping the wheel's layout (the binary's RPATH is
``$ORIGIN/../../../nvidia_pytriton.libs``), into
``$XDG_CACHE_HOME/pytriton_torch/tritonserver-2.51-<sha256 prefix>/`` (default ``~/.cache``).

The cache folders belong to the user and nobody else may write to them: a binary from there is run.
The unpacking goes into a temporary folder beside the target, renamed into place when complete, so
a cache folder that exists is whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import platform
import posixpath
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator

from ..exceptions import PyTritonTorchServerError

SERVER_VERSION = "2.51"
WHEEL_VERSION = "0.7.0"
_FILES = "https://files.pythonhosted.org/packages"


@dataclasses.dataclass(frozen=True)
class PinnedWheel:
    """One ``nvidia-pytriton`` wheel file as published on PyPI (``py3-none``: one per machine type)."""

    filename: str
    url: str
    sha256: str


# From https://pypi.org/simple/nvidia-pytriton/ (0.7.0 has these two wheels, no sdist) and checked
# against `pip download nvidia-pytriton==0.7.0 --no-deps` with sha256sum.
PINNED_WHEELS: dict[str, PinnedWheel] = {
    "x86_64": PinnedWheel(
        "nvidia_pytriton-0.7.0-py3-none-manylinux_2_35_x86_64.whl",
        f"{_FILES}/65/15/9192f7ffe7fab32f545d2a51bdde01e8a50363b8694f0d441efe0cc5310d/"
        "nvidia_pytriton-0.7.0-py3-none-manylinux_2_35_x86_64.whl",
        "21f063ff93bb426d0c06b7a55e7eb9efcfe62c0dddd9a908e9877e18710128df",
    ),
    "aarch64": PinnedWheel(
        "nvidia_pytriton-0.7.0-py3-none-manylinux_2_35_aarch64.whl",
        f"{_FILES}/a5/ea/278744f3a731b1106fc69038b5173469d6d16be31a8f580faf3893bfffcb/"
        "nvidia_pytriton-0.7.0-py3-none-manylinux_2_35_aarch64.whl",
        "f99e07ee56fe065337453956afba17d2673e02ec6a632c3de26ce6e7b32a0898",
    ),
}

# The parts of the wheel that are unpacked; everything else (the pytriton Python package) is skipped.
_WANTED = ("pytriton/tritonserver/", "nvidia_pytriton.libs/")
SERVER_SUBDIR = "pytriton/tritonserver"
LIBS_SUBDIR = "nvidia_pytriton.libs"
_CHUNK = 1 << 20
_DOWNLOAD_TIMEOUT_S = 60.0

# Called with (bytes so far, total bytes or None) while downloading.
ProgressFn = Callable[[int, "int | None"], None]


def pinned_wheel(machine: str | None = None) -> PinnedWheel:
    """The pinned wheel for ``machine`` (default: this machine, ``platform.machine()``)."""
    machine = machine or platform.machine()
    aliases = {"amd64": "x86_64", "arm64": "aarch64"}
    wheel = PINNED_WHEELS.get(aliases.get(machine.lower(), machine))
    if wheel is None:
        raise PyTritonTorchServerError(
            f"nvidia-pytriton {WHEEL_VERSION} has no tritonserver wheel for {machine!r}; "
            f"it exists for {', '.join(sorted(PINNED_WHEELS))} (Linux, glibc 2.35 or newer)"
        )
    return wheel


def cache_root() -> pathlib.Path:
    """``$XDG_CACHE_HOME/pytriton_torch`` (default ``~/.cache/pytriton_torch``), not created here."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "pytriton_torch"


def cache_dir(wheel: PinnedWheel | None = None) -> pathlib.Path:
    """The cache folder of the server files of ``wheel`` (default: this machine's pinned wheel)."""
    wheel = wheel or pinned_wheel()
    return cache_root() / f"tritonserver-{SERVER_VERSION}-{wheel.sha256[:16]}"


def cached_server_root() -> pathlib.Path | None:
    """``<cache>/pytriton/tritonserver`` when the cache holds the server, else None.

    Raises:
        PyTritonTorchServerError: the cache folder exists but another user owns it or others may
            write to it (its binary is not run then).
    """
    try:
        folder = cache_dir()
    except PyTritonTorchServerError:
        return None
    if not os.path.lexists(folder):
        return None
    _check_private(folder.parent)
    _check_private(folder)
    root = folder / SERVER_SUBDIR
    return root if (root / "bin" / "tritonserver").is_file() else None


def fetch_server(
    wheel_file: pathlib.Path | None = None, *, force: bool = False, progress: ProgressFn | None = None
) -> pathlib.Path:
    """Unpack the server files of the pinned wheel into the cache; returns the cache folder.

    Args:
        wheel_file: a local copy of the pinned wheel (offline); downloaded from PyPI when None.
        force: replace a cache folder that already exists (otherwise it is kept and returned).
        progress: called with (bytes so far, total) while downloading.

    Raises:
        PyTritonTorchServerError: no network, a checksum mismatch, an unsafe wheel entry or an unsafe
            cache folder; the message says what to do.
    """
    wheel = pinned_wheel()
    target = cache_dir(wheel)
    if wheel_file is not None:
        _verify(wheel, pathlib.Path(wheel_file))
    root = _private_dir(target.parent)
    if os.path.lexists(target) and not force:
        _check_private(target)
        if (target / SERVER_SUBDIR / "bin" / "tritonserver").is_file():
            return target
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".tmp-tritonserver-", dir=root))
    try:
        if wheel_file is None:
            wheel_file = staging / wheel.filename
            _download(wheel, wheel_file, progress)
        tree = staging / "tree"
        tree.mkdir(mode=0o700)
        try:
            extract_server_files(pathlib.Path(wheel_file), tree)
        except (zipfile.BadZipFile, OSError) as exc:
            raise PyTritonTorchServerError(f"cannot unpack {wheel_file} into {tree}: {exc}") from None
        if not (tree / SERVER_SUBDIR / "bin" / "tritonserver").is_file():
            raise PyTritonTorchServerError(f"{wheel_file} has no {SERVER_SUBDIR}/bin/tritonserver")
        _install(tree, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def extract_server_files(wheel_file: pathlib.Path, dest: pathlib.Path) -> None:
    """Unpack the server trees of ``wheel_file`` into the empty folder ``dest``.

    Keeps the executable bits (others and group never get write), refuses entries that would land
    outside ``dest`` (absolute paths, ``..``), symlinks (a wheel has none; pip would not make them),
    special files and duplicates.
    """
    seen: set[str] = set()
    with zipfile.ZipFile(wheel_file) as archive:
        for info in archive.infolist():
            name = info.filename
            if not name.startswith(_WANTED):
                continue
            relative = _safe_relative(name, wheel_file)
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if kind == stat.S_IFLNK:
                raise PyTritonTorchServerError(
                    f"{wheel_file}: entry {name!r} is a symlink; refusing to unpack (the pinned wheel has none)"
                )
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise PyTritonTorchServerError(f"{wheel_file}: entry {name!r} is not a file or folder")
            if relative in seen:
                raise PyTritonTorchServerError(f"{wheel_file}: entry {name!r} appears twice")
            seen.add(relative)
            path = dest.joinpath(*relative.split("/"))
            if info.is_dir() or kind == stat.S_IFDIR:
                path.mkdir(mode=0o755, parents=True, exist_ok=True)
                continue
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            _write_entry(archive, info, path, 0o755 if mode & 0o111 else 0o644)


def _safe_relative(name: str, wheel_file: pathlib.Path) -> str:
    normal = posixpath.normpath(name)
    parts = name.rstrip("/").split("/")
    if name.startswith("/") or "\\" in name or ".." in parts or normal.startswith(("..", "/")):
        raise PyTritonTorchServerError(
            f"{wheel_file}: entry {name!r} points outside the folder it is unpacked into; refusing to unpack"
        )
    return normal


def _write_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: pathlib.Path, mode: int) -> None:
    # O_EXCL | O_NOFOLLOW: never write through something already there.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as sink, archive.open(info) as source:
        shutil.copyfileobj(source, sink, _CHUNK)
    os.chmod(path, mode)


def _install(tree: pathlib.Path, target: pathlib.Path) -> None:
    """Rename the unpacked ``tree`` to ``target`` (0700), replacing an old ``target`` as a whole."""
    os.chmod(tree, 0o700)
    old: pathlib.Path | None = None
    if os.path.lexists(target):
        old = target.with_name(f".old-{target.name}-{os.getpid()}")
        os.rename(target, old)
    try:
        os.rename(tree, target)
    except OSError:
        # Another fetch put a whole folder there first: keep that one.
        if not (target / SERVER_SUBDIR / "bin" / "tritonserver").is_file():
            if old is not None and not os.path.lexists(target):
                os.rename(old, target)
                old = None
            raise
    finally:
        if old is not None:
            if old.is_symlink():
                old.unlink()
            else:
                shutil.rmtree(old, ignore_errors=True)


def _verify(wheel: PinnedWheel, path: pathlib.Path) -> None:
    try:
        with path.open("rb") as handle:
            hasher = hashlib.sha256()
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                hasher.update(chunk)
    except OSError as exc:
        raise PyTritonTorchServerError(f"cannot read the wheel file {path}: {exc.strerror}") from None
    _check_digest(wheel, path, hasher.hexdigest())


def _check_digest(wheel: PinnedWheel, path: pathlib.Path | str, digest: str) -> None:
    if digest == wheel.sha256:
        return
    other = next((w for w in PINNED_WHEELS.values() if w.sha256 == digest), None)
    hint = (
        f"it is {other.filename}, for another machine type"
        if other
        else "the file is not that wheel or is damaged"
    )
    raise PyTritonTorchServerError(
        f"sha256 of {path} is {digest}, expected {wheel.sha256} ({wheel.filename}); {hint}"
    )


def _download(wheel: PinnedWheel, dest: pathlib.Path, progress: ProgressFn | None) -> None:
    hasher = hashlib.sha256()
    try:
        with (
            urllib.request.urlopen(wheel.url, timeout=_DOWNLOAD_TIMEOUT_S) as response,
            dest.open("wb") as sink,
        ):
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                sink.write(chunk)
                hasher.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise PyTritonTorchServerError(
            f"could not download {wheel.filename} from {wheel.url}: {reason}. Without network: on a "
            f"machine with network run `pip download nvidia-pytriton=={WHEEL_VERSION} --no-deps "
            f"--platform {wheel.filename.rsplit('-', 1)[1].removesuffix('.whl')} -d .`, copy the file "
            f"here and run `pytriton-torch fetch-server --wheel {wheel.filename}`; or install the server "
            f"with pip: pip install 'nvidia-pytriton=={WHEEL_VERSION}' (it pins numpy<2)"
        ) from None
    _check_digest(wheel, wheel.url, hasher.hexdigest())


def _private_dir(folder: pathlib.Path) -> pathlib.Path:
    """Create ``folder`` (0700) if missing and check it is the user's alone."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise PyTritonTorchServerError(f"cannot create the cache folder {folder}: {exc.strerror}") from None
    _check_private(folder)
    return folder


def _check_private(folder: pathlib.Path) -> None:
    try:
        info = folder.lstat()
    except OSError as exc:
        raise PyTritonTorchServerError(f"cannot read the cache folder {folder}: {exc.strerror}") from None
    problems = list(_ownership_problems(info))
    if problems:
        raise PyTritonTorchServerError(
            f"the server cache folder {folder} {' and '.join(problems)}; tritonserver is not run from "
            f"there. Remove it (or set XDG_CACHE_HOME to a folder of your own) and run "
            f"`pytriton-torch fetch-server` again"
        )


def _ownership_problems(info: os.stat_result) -> Iterator[str]:
    if not stat.S_ISDIR(info.st_mode):
        yield "is not a folder (a symlink or file)"
    if info.st_uid != os.getuid():
        yield f"belongs to uid {info.st_uid}, not to you (uid {os.getuid()})"
    if info.st_mode & 0o022:
        yield f"is writable by others (mode {stat.S_IMODE(info.st_mode):o})"
