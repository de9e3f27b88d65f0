"""POSIX shared-memory segments for large tensors: one growing segment per writer, mapped by readers.

Segments live in ``/dev/shm`` with mode 0600 and a name that starts with the server's private
prefix (``ptt-<pid>-<random>``), so the owning server can remove every one of them at stop, and the
next start can remove those of a server that was killed.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pathlib
from collections.abc import Callable

import numpy as np

SHM_DIR = pathlib.Path("/dev/shm")
_ALIGN = 64
_MIN_SIZE = 1 << 20


def _align(n: int) -> int:
    return (n + _ALIGN - 1) & ~(_ALIGN - 1)


class ShmWriter:
    """A segment this side writes tensors into; replaced by a larger one when it is too small.

    A new segment gets a new name, so a reader never sees a segment change size under it.
    """

    def __init__(self, name_prefix: str) -> None:
        self._prefix = name_prefix
        self._generation = 0
        self._mm: mmap.mmap | None = None
        self._name = ""
        self._size = 0
        self._used = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def size(self) -> int:
        return self._size

    def reset(self, needed: int) -> None:
        """Start a new message needing ``needed`` bytes; grows the segment if it is too small."""
        self._used = 0
        if needed <= self._size:
            return
        size = max(_MIN_SIZE, 1 << (needed - 1).bit_length())
        self._generation += 1
        name = f"{self._prefix}-{self._generation}"
        fd = os.open(SHM_DIR / name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self._unlink_current()
        self._mm, self._name, self._size = mm, name, size

    def write(self, array: np.ndarray) -> tuple[int, int]:
        """Copy a C-contiguous array into the segment; returns (offset, nbytes)."""
        assert self._mm is not None
        offset = self._used
        nbytes = array.nbytes
        if nbytes:
            dst = np.frombuffer(self._mm, dtype=np.uint8, count=nbytes, offset=offset)
            np.copyto(dst, array.reshape(-1).view(np.uint8))
        self._used = _align(offset + nbytes)
        return offset, nbytes

    def write_bytes(self, data: bytes | memoryview) -> tuple[int, int]:
        assert self._mm is not None
        offset = self._used
        self._mm[offset : offset + len(data)] = data
        self._used = _align(offset + len(data))
        return offset, len(data)

    def _unlink_current(self) -> None:
        if self._name:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(SHM_DIR / self._name)
        # The old mapping is left to the garbage collector: arrays may still view it.
        self._mm = None

    def close(self) -> None:
        self._unlink_current()
        self._name, self._size = "", 0


class ShmReader:
    """Maps the segments named in messages (views, no copies).

    ``on_map``/``on_unmap`` see each mapping when it is made and dropped (used to page-lock
    segments for CUDA copies).
    """

    def __init__(
        self,
        on_map: Callable[[mmap.mmap], None] | None = None,
        on_unmap: Callable[[mmap.mmap], None] | None = None,
    ) -> None:
        self._maps: dict[str, mmap.mmap] = {}
        self._on_map = on_map
        self._on_unmap = on_unmap

    def view(self, name: str, offset: int, nbytes: int) -> memoryview:
        mm = self._maps.get(name)
        if mm is None:
            fd = os.open(SHM_DIR / name, os.O_RDWR)
            try:
                mm = mmap.mmap(fd, 0)
            finally:
                os.close(fd)
            # A writer replaces its segment only to grow it; forget the old one.
            self._drop()
            self._maps = {name: mm}
            if self._on_map is not None:
                self._on_map(mm)
        return memoryview(mm)[offset : offset + nbytes]

    @property
    def mapped_bytes(self) -> int:
        """Bytes of the segments mapped now (for the channel's shared-memory gauge)."""
        return sum(len(mm) for mm in self._maps.values())

    def _drop(self) -> None:
        if self._on_unmap is not None:
            for old in self._maps.values():
                self._on_unmap(old)
        self._maps.clear()

    def close(self) -> None:
        self._drop()


def segment_aligned_size(nbytes: int) -> int:
    """Bytes a tensor takes in a segment, padding included."""
    return _align(nbytes)


def remove_segments(prefix: str) -> int:
    """Unlink every segment whose name starts with ``prefix``; returns how many."""
    removed = 0
    for path in SHM_DIR.glob(f"{prefix}*"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


def remove_stale_segments() -> int:
    """Unlink segments left by servers whose owning process no longer exists (after a SIGKILL)."""
    removed = 0
    for path in SHM_DIR.glob("ptt-*"):
        parts = path.name.split("-")
        if len(parts) < 3 or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid_alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError, PermissionError):
            path.unlink()
            removed += 1
    return removed


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs; a zombie (exited, not yet reaped, e.g. a killed stub) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
