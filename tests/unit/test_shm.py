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
    SHRINK_AFTER,
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


def _fill(writer: ShmWriter, needed: int, times: int = 1) -> None:
    for _ in range(times):
        writer.reset(needed)


def test_steady_size_keeps_its_segment(writer: ShmWriter) -> None:
    writer.reset(5 << 20)
    name = writer.name
    _fill(writer, 5 << 20, 3 * SHRINK_AFTER)
    assert writer.name == name
    assert writer.size == 8 << 20


def test_one_large_message_is_given_back_after_smaller_ones(writer: ShmWriter, prefix: str) -> None:
    _fill(writer, 3 << 20, SHRINK_AFTER)
    writer.reset(100 << 20)
    large = writer.name
    assert writer.size == 128 << 20
    _fill(writer, 3 << 20, SHRINK_AFTER - 1)  # the large message is still among the recent ones
    assert writer.name == large
    writer.reset(3 << 20)
    assert writer.size == 4 << 20
    assert writer.name != large
    assert not (SHM_DIR / large).exists()
    assert (SHM_DIR / writer.name).stat().st_size == 4 << 20
    assert [p.name for p in SHM_DIR.glob(f"{prefix}*")] == [writer.name]


def test_sizes_that_alternate_within_the_window_keep_the_segment(writer: ShmWriter) -> None:
    writer.reset(64 << 20)
    name = writer.name
    for _ in range(4 * SHRINK_AFTER):
        writer.reset(2 << 20)
        writer.reset(60 << 20)
    assert writer.name == name


def test_shrinks_to_the_largest_recent_need(writer: ShmWriter) -> None:
    writer.reset(100 << 20)
    for i in range(SHRINK_AFTER):
        writer.reset((9 << 20) if i == 3 else (1 << 20))
    assert writer.size == 16 << 20
    _fill(writer, 1 << 20, SHRINK_AFTER)
    assert writer.size == 1 << 20


def test_segment_released_when_recent_messages_use_none(writer: ShmWriter, prefix: str) -> None:
    writer.reset(10 << 20)
    name = writer.name
    _fill(writer, 0, SHRINK_AFTER - 1)
    assert writer.name == name
    writer.reset(0)
    assert (writer.name, writer.size) == ("", 0)
    assert not (SHM_DIR / name).exists()
    writer.reset(100)  # the next message that needs one gets a new one
    assert writer.size == 1 << 20
    assert list(SHM_DIR.glob(f"{prefix}*")) == [SHM_DIR / writer.name]


def test_minimum_segment_is_kept(writer: ShmWriter) -> None:
    writer.reset(100)
    name = writer.name
    _fill(writer, 0, 3 * SHRINK_AFTER)
    assert writer.name == name


def test_reader_drops_mapping_of_a_replaced_or_released_segment(writer: ShmWriter) -> None:
    reader = ShmReader()
    try:
        writer.reset(10 << 20)
        view = reader.view(writer.name, 0, 4)
        assert reader.mapped_bytes == 16 << 20
        reader.retain(writer.name)
        assert reader.mapped_bytes == 16 << 20
        view.release()
        _fill(writer, 0, SHRINK_AFTER)
        reader.retain(writer.name)
        assert reader.mapped_bytes == 0
        writer.reset(2 << 20)
        reader.view(writer.name, 0, 4).release()
        assert reader.mapped_bytes == 2 << 20
        writer.reset(3 << 20)  # grows: a new name
        reader.retain(writer.name)
        assert reader.mapped_bytes == 0
    finally:
        reader.close()
