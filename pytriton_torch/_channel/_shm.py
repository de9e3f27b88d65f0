"""POSIX shared-memory segments for large tensors: one segment per writer, sized to recent messages, mapped by readers.

Segments live in ``/dev/shm`` with mode 0600 and a name that starts with the server's private
prefix (``ptt-<pid>-<random>``), so the owning server can remove every one of them at stop, and the
next start can remove those of a server that was killed.
"""

from __future__ import annotations

import collections
import contextlib
import mmap
import os
import pathlib
from collections.abc import Callable

import numpy as np

SHM_DIR = pathlib.Path("/dev/shm")
_ALIGN = 64
_MIN_SIZE = 1 << 20
SHRINK_AFTER = 8
"""Messages in a row that must fit in a smaller segment before a writer replaces its own."""


def _align(n: int) -> int:
    return (n + _ALIGN - 1) & ~(_ALIGN - 1)


def _segment_size(needed: int) -> int:
    return max(_MIN_SIZE, 1 << (needed - 1).bit_length())


class ShmWriter:
    """A segment this side writes tensors into, sized for the recent messages.

    It grows (to a power of two) when a message does not fit, and is replaced by a smaller one
    once the last :data:`SHRINK_AFTER` messages would all fit in half of it or less, so one large
    request does not hold its memory until stop while a steady size keeps its segment. A
    replacement gets a new name (generation): a reader never sees a segment change size under it,
    and drops its mapping of the old one when a message names the new one (or none).
    """

    def __init__(self, name_prefix: str) -> None:
        self._prefix = name_prefix
        self._generation = 0
        self._mm: mmap.mmap | None = None
        self._name = ""
        self._size = 0
        self._used = 0
        self._recent: collections.deque[int] = collections.deque(maxlen=SHRINK_AFTER)

    @property
    def name(self) -> str:
        return self._name

    @property
    def size(self) -> int:
        return self._size

    def reset(self, needed: int) -> None:
        """Start a new message needing ``needed`` bytes (0: none); grows or shrinks the segment."""
        self._used = 0
        self._recent.append(needed)
        if needed > self._size:
            self._replace(_segment_size(needed))
        elif self._size > _MIN_SIZE and len(self._recent) == SHRINK_AFTER:
            largest = max(self._recent)
            if not largest:
                self.close()  # nothing recent used shared memory: hold none
            elif _segment_size(largest) < self._size:
                self._replace(_segment_size(largest))

    def _replace(self, size: int) -> None:
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
            # A writer holds one segment at a time: the one it replaced is not named again.
            self._drop()
            self._maps = {name: mm}
            if self._on_map is not None:
                self._on_map(mm)
        return memoryview(mm)[offset : offset + nbytes]

    def retain(self, name: str) -> None:
        """A message named the writer's current segment (``""``: it holds none): drop older mappings.

        Arrays that still view a dropped segment keep it mapped until they are freed.
        """
        if self._maps and name not in self._maps:
            self._drop()

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
