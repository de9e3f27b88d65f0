"""Unit tests of pytriton_torch._channel._shm: segments in /dev/shm, their growth and cleanup."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from pytriton_torch._channel._shm import (
    SHM_DIR,
    ShmReader,
    ShmWriter,
    remove_segments,
    remove_stale_segments,
    segment_aligned_size,
)


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"ptt-{os.getpid()}-shm-{uuid.uuid4().hex[:8]}"
    yield name
    for path in SHM_DIR.glob(f"{name}*"):
        path.unlink(missing_ok=True)


@pytest.fixture
def writer(prefix: str) -> Iterator[ShmWriter]:
    writer = ShmWriter(prefix)
    yield writer
    writer.close()


def dead_pid() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) + 12345
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    return pid


def test_new_writer_has_no_segment(writer: ShmWriter) -> None:
    assert writer.name == ""
    assert writer.size == 0


def test_reset_creates_segment_with_mode_0600(writer: ShmWriter, prefix: str) -> None:
    writer.reset(100)
    assert writer.name == f"{prefix}-1"
    assert writer.size == 1 << 20  # minimum size
    info = (SHM_DIR / writer.name).stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_size == 1 << 20
    assert info.st_uid == os.getuid()


def test_reset_rounds_up_to_power_of_two(writer: ShmWriter) -> None:
    writer.reset((1 << 21) + 1)
    assert writer.size == 1 << 22


def test_reset_reuses_segment_when_big_enough(writer: ShmWriter) -> None:
    writer.reset(1000)
    name = writer.name
    writer.reset(1 << 20)
    assert writer.name == name
    assert writer.size == 1 << 20


def test_growth_gets_new_name_and_unlinks_old(writer: ShmWriter, prefix: str) -> None:
    writer.reset(10)
    old = writer.name
    writer.reset((1 << 20) + 1)
    assert writer.name == f"{prefix}-2"
    assert writer.name != old
    assert writer.size == 1 << 21
    assert not (SHM_DIR / old).exists()
    assert (SHM_DIR / writer.name).exists()
    assert stat.S_IMODE((SHM_DIR / writer.name).stat().st_mode) == 0o600


def test_write_and_read_back(writer: ShmWriter) -> None:
    writer.reset(4096)
    a = np.arange(10, dtype=np.float32)
    b = np.arange(3, dtype=np.int64)
    off_a, n_a = writer.write(a)
    off_b, n_b = writer.write(b)
    off_c, n_c = writer.write_bytes(b"hello\x00")
    assert (off_a, n_a) == (0, 40)
    assert (off_b, n_b) == (64, 24)  # 64-byte alignment
    assert (off_c, n_c) == (128, 6)
    reader = ShmReader()
    try:
        np.testing.assert_array_equal(np.frombuffer(reader.view(writer.name, off_a, n_a), np.float32), a)
        np.testing.assert_array_equal(np.frombuffer(reader.view(writer.name, off_b, n_b), np.int64), b)
        assert bytes(reader.view(writer.name, off_c, n_c)) == b"hello\x00"
    finally:
        reader.close()


def test_reset_restarts_offsets(writer: ShmWriter) -> None:
    writer.reset(1000)
    writer.write(np.zeros(100, np.uint8))
    writer.reset(1000)
    assert writer.write(np.zeros(1, np.uint8)) == (0, 1)


def test_write_empty_array(writer: ShmWriter) -> None:
    writer.reset(64)
    assert writer.write(np.zeros(0, np.float32)) == (0, 0)
    assert writer.write(np.ones(1, np.float32)) == (0, 4)


def test_reader_follows_writer_growth(writer: ShmWriter) -> None:
    reader = ShmReader()
    try:
        writer.reset(10)
        writer.write_bytes(b"first")
        assert bytes(reader.view(writer.name, 0, 5)) == b"first"
        writer.reset(1 << 21)
        writer.write_bytes(b"second")
        assert bytes(reader.view(writer.name, 0, 6)) == b"second"
    finally:
        reader.close()


def test_close_unlinks_segment(prefix: str) -> None:
    writer = ShmWriter(prefix)
    writer.reset(10)
    name = writer.name
    assert (SHM_DIR / name).exists()
    writer.close()
    assert not (SHM_DIR / name).exists()
    assert writer.name == ""
    assert writer.size == 0
    writer.close()  # idempotent


@pytest.mark.parametrize(("nbytes", "expected"), [(0, 0), (1, 64), (64, 64), (65, 128), (1000, 1024)])
def test_segment_aligned_size(nbytes: int, expected: int) -> None:
    assert segment_aligned_size(nbytes) == expected


def test_remove_segments(prefix: str) -> None:
    other = f"ptt-{os.getpid()}-other-{uuid.uuid4().hex[:8]}"
    paths = [SHM_DIR / f"{prefix}-{i}" for i in range(3)]
    for path in [*paths, SHM_DIR / other]:
        path.write_bytes(b"x")
    try:
        assert remove_segments(prefix) == 3
        assert not any(p.exists() for p in paths)
        assert (SHM_DIR / other).exists()
        assert remove_segments(prefix) == 0
    finally:
        (SHM_DIR / other).unlink(missing_ok=True)


def test_remove_stale_segments() -> None:
    token = uuid.uuid4().hex[:8]
    stale = SHM_DIR / f"ptt-{dead_pid()}-{token}"
    alive = SHM_DIR / f"ptt-{os.getpid()}-{token}"
    not_ours = SHM_DIR / f"ptt-notapid-{token}"
    short = SHM_DIR / f"ptt-{token}"
    files = [stale, alive, not_ours, short]
    for path in files:
        path.write_bytes(b"x")
    try:
        removed = remove_stale_segments()
        assert removed >= 1
        assert not stale.exists()
        assert alive.exists()
        assert not_ours.exists()
        assert short.exists()
    finally:
        for path in files:
            path.unlink(missing_ok=True)
