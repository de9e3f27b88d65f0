"""Build (once per source version) and locate our C libraries loaded into tritonserver.

Two libraries, built the same way: the LD_PRELOAD library (``_preload.c``) keeps admin tokens off
the server's command line, creates the Python backend's shared-memory regions owner-only, and ends
a stub whose server died; the native backend (``_backend.c``, see :func:`backend_library`) is our
own Triton backend. Where each comes from, first match wins:

1. a copy built next to the source by ``pytriton-torch build`` (e.g. while building a container
   image, so that the image needs no compiler), if nobody but its owner (root or you) can write it;
2. the per-user cache, ``$XDG_CACHE_HOME/pytriton_torch`` or ``~/.cache/pytriton_torch``;
3. built now with the system C compiler into that cache (or the private workspace).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import platform
import shlex
import shutil
import stat
import subprocess
import tempfile

from ..exceptions import PyTritonTorchServerError

SOURCE = pathlib.Path(__file__).with_name("_preload.c")
BACKEND_SOURCE = pathlib.Path(__file__).with_name("_backend.c")
CFLAGS = ("-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror")
PLACEHOLDER = "@@PTT_SECRET_{}@@"
SECRET_VAR = "PTT_SECRET_{}"


class Secrets:
    """Values kept off the command line: ``hide`` gives the placeholder the preload library replaces.

    Example::

        secrets = Secrets()
        args = [f"--http-restricted-api=logging:key={secrets.hide(token)}"]
        env.update(secrets.environment())
    """

    def __init__(self) -> None:
        self._values: list[str] = []

    def hide(self, value: str) -> str:
        self._values.append(value)
        return PLACEHOLDER.format(len(self._values) - 1)

    def environment(self) -> dict[str, str]:
        return {SECRET_VAR.format(index): value for index, value in enumerate(self._values)}


def preload_library(fallback_dir: pathlib.Path) -> pathlib.Path:
    """The compiled library, built now if no cached copy matches the source.

    Cached in ``$XDG_CACHE_HOME/pytriton_torch`` (or ``~/.cache/pytriton_torch``) when that folder is
    private to this user, else built into ``fallback_dir`` (the server's private workspace).
    """
    return _library(SOURCE, "preload", fallback_dir)


def backend_library(fallback_dir: pathlib.Path) -> pathlib.Path:
    """The native Triton backend (``_backend.c``), found or built like :func:`preload_library`."""
    return _library(BACKEND_SOURCE, "backend", fallback_dir)


def _library(source: pathlib.Path, stem: str, fallback_dir: pathlib.Path) -> pathlib.Path:
    prebuilt = packaged_library(source)
    if _is_trusted_file(prebuilt):
        return prebuilt
    digest = _digest(source)
    folder = _cache_dir() or fallback_dir
    if any(c in str(folder) for c in " :"):
        raise PyTritonTorchServerError(
            f"cannot build the tritonserver preload library in {folder}: LD_PRELOAD paths cannot hold ' ' "
            "or ':'; set XDG_CACHE_HOME to a private folder without them, or choose another workspace"
        )
    library = folder / f"{stem}-{digest}.so"
    if _is_private_file(library):
        return library
    _compile(folder, library, source)
    return library


def existing_library() -> pathlib.Path | None:
    """The library a start would use without compiling, if there is one (packaged, then cached)."""
    if _is_trusted_file(packaged_library()):
        return packaged_library()
    folder = _cache_dir()
    cached = None if folder is None else folder / f"preload-{_digest()}.so"
    return cached if cached is not None and _is_private_file(cached) else None


def compiler() -> list[str] | None:
    """The C compiler a start would use (``$CC``, else cc, gcc or clang on PATH), or None."""
    try:
        return _find_compiler()
    except PyTritonTorchServerError:
        return None


def packaged_library(source: pathlib.Path | None = None) -> pathlib.Path:
    """Where ``pytriton-torch build`` puts a library (default: the preload's), named by its source's hash."""
    source = source or SOURCE
    return source.with_name(f"{source.stem}-{_digest(source)}.so")


def build_packaged_library() -> pathlib.Path:
    """Compile the library beside its source (for images and machines without a compiler at run time).

    Run it as the user who installed the package (root for a system-wide install); the file is
    then used by every user, as long as only its owner can write it and its folder.
    """
    return _build_packaged(SOURCE)


def build_packaged_backend() -> pathlib.Path:
    """Compile the native backend beside its source, as :func:`build_packaged_library` does."""
    return _build_packaged(BACKEND_SOURCE)


def _build_packaged(source: pathlib.Path) -> pathlib.Path:
    library = packaged_library(source)
    folder = library.parent
    if not os.access(folder, os.W_OK):
        raise PyTritonTorchServerError(
            f"cannot write {folder}: run `pytriton-torch build` as the user who installed pytriton_torch"
        )
    _compile(folder, library, source)
    os.chmod(library, 0o755)
    return library


def _digest(source: pathlib.Path | None = None) -> str:
    data = (source or SOURCE).read_bytes()
    return hashlib.sha256(data + platform.machine().encode()).hexdigest()[:16]


def _cache_dir() -> pathlib.Path | None:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = pathlib.Path(base) / "pytriton_torch"
    with contextlib.suppress(OSError):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    # LD_PRELOAD splits its value at spaces and colons.
    if any(c in str(folder) for c in " :"):
        return None
    # Nobody else may swap the library: the folder is ours, and its parent ours or root's.
    if not (_is_safe_dir(folder, (os.getuid(),)) and _is_safe_dir(folder.parent, (os.getuid(), 0))):
        return None
    return folder


def _is_safe_dir(path: pathlib.Path, owners: tuple[int, ...]) -> bool:
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid in owners and not info.st_mode & 0o022


def _is_trusted_file(path: pathlib.Path) -> bool:
    """A file only root or this user can change, in a folder only they can change."""
    owners = (os.getuid(), 0)
    try:
        info = path.lstat()
    except OSError:
        return False
    return (
        stat.S_ISREG(info.st_mode)
        and info.st_uid in owners
        and not info.st_mode & 0o022
        and _is_safe_dir(path.parent, owners)
    )


def _is_private_file(path: pathlib.Path) -> bool:
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022


def _compile(folder: pathlib.Path, library: pathlib.Path, source: pathlib.Path) -> None:
    compiler = _find_compiler()
    fd, temporary = tempfile.mkstemp(prefix=f".{source.stem}-", suffix=".so", dir=folder)
    os.close(fd)
    try:
        _run_compiler(compiler, temporary, source)
        os.chmod(temporary, 0o700)
        os.replace(temporary, library)  # atomic: a concurrent start sees the old file or the new one
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _find_compiler() -> list[str]:
    compiler = (
        shlex.split(os.environ.get("CC", ""))
        or [found for found in map(shutil.which, ("cc", "gcc", "clang")) if found][:1]
    )
    if not compiler:
        raise PyTritonTorchServerError(
            "pytriton_torch needs a C compiler (cc, gcc or clang on PATH, or $CC) once, to build the small "
            f"library it loads into tritonserver ({SOURCE}); install one, e.g. `apt-get install gcc`"
        )
    return compiler


def _run_compiler(compiler: list[str], output: str, source: pathlib.Path) -> None:
    # The backend's Triton symbols are resolved from the server (libtritonserver.so) at load time.
    libs = [] if source == BACKEND_SOURCE else ["-ldl", "-lpthread"]
    command = [*compiler, *CFLAGS, "-o", output, str(source), *libs]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise PyTritonTorchServerError(
            f"cannot run the C compiler {compiler[0]} to build {source}: {exc}"
        ) from None
    if done.returncode != 0:
        raise PyTritonTorchServerError(
            f"building {source} with {' '.join(compiler)} failed (exit {done.returncode}):\n{done.stderr[-4000:]}"
        )
