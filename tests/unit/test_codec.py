"""Unit tests of pytriton_torch._channel._codec: pack/unpack round trips, inline and via shared memory."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pytriton_torch._channel._codec import (
    INLINE_LIMIT,
    Packer,
    as_wire_array,
    deserialize_bytes,
    serialize_bytes,
    unpack,
)
from pytriton_torch._channel._shm import SHM_DIR, SHRINK_AFTER, ShmReader, ShmWriter, remove_segments
from pytriton_torch._dtypes import numpy_to_triton
from pytriton_torch.exceptions import PyTritonTorchValidationError

NUMERIC = [
    np.bool_,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.float16,
    np.float32,
    np.float64,
]


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"ptt-{os.getpid()}-codec-{uuid.uuid4().hex[:8]}"
    yield name
    remove_segments(name)


@pytest.fixture
def packer(prefix: str) -> Iterator[Packer]:
    packer = Packer(ShmWriter(prefix))
    yield packer
    packer.close()


@pytest.fixture
def reader() -> Iterator[ShmReader]:
    reader = ShmReader()
    yield reader
    reader.close()


def sample(dtype: type, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype is np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return (rng.standard_normal(size=shape) * 1000).astype(dtype)


def round_trip(
    packer: Packer, reader: ShmReader, group: dict[str, Any]
) -> tuple[dict[str, np.ndarray], list[Any], str]:
    descriptors, frames, segment = packer.pack([group])
    assert len(descriptors) == 1
    return unpack(descriptors[0], frames, segment, reader), descriptors[0], segment


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", NUMERIC)
def test_numeric_round_trip_inline(packer: Packer, reader: ShmReader, dtype: type) -> None:
    array = sample(dtype, (3, 5))
    out, descriptors, segment = round_trip(packer, reader, {"a": array})
    assert_same(out["a"], array)
    name, datatype, shape, frame, offset, nbytes = descriptors[0]
    assert name == "a"
    assert datatype == numpy_to_triton(np.dtype(dtype))
    assert shape == [3, 5]
    assert offset == 0
    assert frame == 0
    assert nbytes == array.nbytes
    assert segment == ""


@pytest.mark.parametrize("dtype", NUMERIC)
def test_numeric_round_trip_shm(packer: Packer, reader: ShmReader, prefix: str, dtype: type) -> None:
    itemsize = np.dtype(dtype).itemsize
    array = sample(dtype, (INLINE_LIMIT // itemsize + 7,))
    out, descriptors, segment = round_trip(packer, reader, {"big": array})
    assert_same(out["big"], array)
    assert descriptors[0][3] == -1
    assert descriptors[0][5] == array.nbytes
    assert segment.startswith(prefix)


def test_datatype_names_in_descriptors(packer: Packer) -> None:
    group = {
        "f": np.zeros(2, np.float32),
        "i": np.zeros(2, np.int64),
        "b": np.zeros(2, np.bool_),
        "s": np.array([b"x"], dtype=object),
        "u": np.array(["x"]),
    }
    descriptors, _, _ = packer.pack([group])
    assert {d[0]: d[1] for d in descriptors[0]} == {
        "f": "FP32",
        "i": "INT64",
        "b": "BOOL",
        "s": "BYTES",
        "u": "BYTES",
    }


@pytest.mark.parametrize("dtype", [np.float32, np.int8, np.bool_, np.float64])
def test_zero_dim_array(packer: Packer, reader: ShmReader, dtype: type) -> None:
    array = np.array(dtype(1))
    out, descriptors, _ = round_trip(packer, reader, {"s": array})
    assert descriptors[0][2] == []
    assert out["s"].shape == ()
    assert out["s"].dtype == np.dtype(dtype)
    assert out["s"] == array


def test_zero_dim_bytes(packer: Packer, reader: ShmReader) -> None:
    array = np.array(b"abc\x00", dtype=object)
    out, _, _ = round_trip(packer, reader, {"s": array})
    assert out["s"].shape == ()
    assert out["s"].item() == b"abc\x00"


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((0,), np.float32),
        ((0,), np.int64),
        ((0,), np.object_),
        ((0, 4), np.object_),
        ((2, 0, 3), np.object_),
        ((0, 4), np.float32),
        ((0, 4), np.int64),
        ((2, 0, 3), np.float32),
        ((1, 0, 4), np.int64),
    ],
)
def test_empty_arrays(packer: Packer, reader: ShmReader, shape: tuple[int, ...], dtype: type) -> None:
    array = np.empty(shape, dtype=dtype)
    out, descriptors, _ = round_trip(packer, reader, {"e": array})
    assert out["e"].shape == shape
    assert out["e"].dtype == np.dtype(dtype)
    assert out["e"].size == 0
    assert descriptors[0][5] == 0


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2], id="strided"),
        pytest.param(lambda: np.arange(24, dtype=np.int32).reshape(4, 6).T, id="transposed"),
        pytest.param(lambda: np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)), id="fortran"),
        pytest.param(lambda: np.arange(10, dtype=np.int16)[::-1], id="reversed"),
    ],
)
def test_non_contiguous_inline(packer: Packer, reader: ShmReader, make: Any) -> None:
    array = make()
    assert not array.flags.c_contiguous
    out, _, _ = round_trip(packer, reader, {"nc": array})
    assert_same(out["nc"], array)


def test_non_contiguous_shm(packer: Packer, reader: ShmReader) -> None:
    base = np.arange(2 * INLINE_LIMIT, dtype=np.float32).reshape(-1, 2)
    array = base[:, 1]
    assert not array.flags.c_contiguous
    out, descriptors, _ = round_trip(packer, reader, {"nc": array})
    assert descriptors[0][3] == -1
    assert_same(out["nc"], array)


def test_bytes_keep_trailing_nul_and_encode_str(packer: Packer, reader: ShmReader) -> None:
    array = np.array([[b"a\x00\x00", "héllo"], [b"", b"\x00"]], dtype=object)
    out, descriptors, _ = round_trip(packer, reader, {"t": array})
    assert descriptors[0][1] == "BYTES"
    got = out["t"]
    assert got.dtype == np.object_
    assert got.shape == (2, 2)
    assert got.tolist() == [[b"a\x00\x00", "héllo".encode()], [b"", b"\x00"]]


def test_unicode_array_becomes_utf8_bytes(packer: Packer, reader: ShmReader) -> None:
    out, _, _ = round_trip(packer, reader, {"u": np.array(["ab", "ćd"])})
    assert out["u"].tolist() == [b"ab", "ćd".encode()]


def test_large_bytes_go_to_shm(packer: Packer, reader: ShmReader) -> None:
    items = [bytes([i % 256]) * 1000 + b"\x00" for i in range(100)]
    array = np.array(items, dtype=object)
    out, descriptors, segment = round_trip(packer, reader, {"blob": array})
    assert descriptors[0][3] == -1
    assert segment
    assert out["blob"].tolist() == items


def test_mixed_inline_and_shm_multiple_groups(packer: Packer, reader: ShmReader) -> None:
    small = np.arange(4, dtype=np.int32)
    big = np.arange(INLINE_LIMIT, dtype=np.float64)
    big2 = np.ones(INLINE_LIMIT, dtype=np.float32)
    groups = [{"small": small, "big": big}, {"small": small + 1, "big": big2}]
    descriptors, frames, segment = packer.pack(groups)
    assert len(descriptors) == 2
    assert len(frames) == 2
    assert [d[3] for d in descriptors[0]] == [0, -1]
    assert [d[3] for d in descriptors[1]] == [1, -1]
    # shm tensors do not overlap and are 64-byte aligned
    offsets = sorted((d[4], d[5]) for group in descriptors for d in group if d[3] == -1)
    assert offsets[0][0] + offsets[0][1] <= offsets[1][0]
    assert all(offset % 64 == 0 for offset, _ in offsets)
    first = unpack(descriptors[0], frames, segment, reader)
    second = unpack(descriptors[1], frames, segment, reader)
    assert_same(first["small"], small)
    assert_same(first["big"], big)
    assert_same(second["small"], small + 1)
    assert_same(second["big"], big2)


def test_exactly_inline_limit_stays_inline(packer: Packer) -> None:
    descriptors, frames, segment = packer.pack([{"a": np.zeros(INLINE_LIMIT, np.uint8)}])
    assert descriptors[0][0][3] == 0
    assert len(frames) == 1
    assert segment == ""
    descriptors, _, segment = packer.pack([{"a": np.zeros(INLINE_LIMIT + 1, np.uint8)}])
    assert descriptors[0][0][3] == -1
    assert segment != ""


def test_custom_inline_limit(prefix: str, reader: ShmReader) -> None:
    packer = Packer(ShmWriter(prefix), inline_limit=8)
    try:
        array = np.arange(4, dtype=np.int32)  # 16 bytes > 8
        descriptors, frames, segment = packer.pack([{"a": array}])
        assert descriptors[0][0][3] == -1
        assert frames == []
        assert_same(unpack(descriptors[0], frames, segment, reader)["a"], array)
    finally:
        packer.close()


def test_segment_grows_with_new_name(packer: Packer, reader: ShmReader, prefix: str) -> None:
    small = np.ones(INLINE_LIMIT, dtype=np.float32)  # 256 KiB -> 1 MiB segment
    _, _, first = packer.pack([{"a": small}])
    assert (SHM_DIR / first).exists()
    assert (SHM_DIR / first).stat().st_size == 1 << 20
    # Fits: same segment reused.
    _, _, again = packer.pack([{"a": small * 2}])
    assert again == first
    big = np.arange(600_000, dtype=np.float32)  # 2.4 MB -> 4 MiB segment
    descriptors, frames, second = packer.pack([{"b": big}])
    assert second != first
    assert second.startswith(prefix)
    assert not (SHM_DIR / first).exists()
    assert (SHM_DIR / second).stat().st_size == 1 << 22
    assert_same(unpack(descriptors[0], frames, second, reader)["b"], big)


def test_inline_arrays_are_writable(packer: Packer, reader: ShmReader) -> None:
    array = np.arange(6, dtype=np.float32)
    descriptors, frames, segment = packer.pack([{"a": array}])
    # read-only frames (ZeroMQ's) are copied; a writable receive buffer (the unix transport's) is viewed
    from_readonly = unpack(descriptors[0], [bytes(f) for f in frames], segment, reader)["a"]
    received = bytearray(bytes(frames[0]))
    from_buffer = unpack(descriptors[0], [memoryview(received)], segment, reader)["a"]
    for out in (from_readonly, from_buffer):
        assert out.flags.writeable
        out[0] = 42.0
        assert out[0] == 42.0
    assert np.frombuffer(received, dtype=np.float32)[0] == 42.0  # zero-copy view of the buffer
    assert array[0] == 0.0


def test_inline_unpack_does_not_alias_frames(packer: Packer, reader: ShmReader) -> None:
    array = np.arange(4, dtype=np.int64)
    descriptors, frames, segment = packer.pack([{"a": array}])
    wire = [bytes(f) for f in frames]
    out = unpack(descriptors[0], wire, segment, reader)
    out["a"][:] = -1
    assert np.frombuffer(wire[0], dtype=np.int64).tolist() == [0, 1, 2, 3]


def test_inline_frames_are_bytes_like(packer: Packer) -> None:
    array = np.arange(5, dtype=np.int16)
    _, frames, _ = packer.pack([{"a": array}])
    assert bytes(frames[0]) == array.tobytes()


def test_pack_accepts_lists_and_torch_tensors(packer: Packer, reader: ShmReader) -> None:
    torch = pytest.importorskip("torch")
    group = {"l": [[1.0, 2.0]], "t": torch.arange(3, dtype=torch.int32)}
    out, descriptors, _ = round_trip(packer, reader, group)
    assert_same(out["l"], np.array([[1.0, 2.0]]))
    assert_same(out["t"], np.arange(3, dtype=np.int32))
    assert [d[1] for d in descriptors] == ["FP64", "INT32"]


def test_pack_unsupported_dtype_names_output(packer: Packer) -> None:
    with pytest.raises(PyTritonTorchValidationError, match="tensor 'c': dtype complex64"):
        packer.pack([{"c": np.zeros(2, dtype=np.complex64)}])


def test_empty_pack(packer: Packer) -> None:
    assert packer.pack([]) == ([], [], "")
    assert packer.pack([{}]) == ([[]], [], "")


def test_serialize_bytes_format() -> None:
    data = serialize_bytes(np.array([b"ab", "c", 7, b""], dtype=object))
    assert data == b"\x02\x00\x00\x00ab" + b"\x01\x00\x00\x00c" + b"\x01\x00\x00\x007" + b"\x00\x00\x00\x00"


def test_deserialize_bytes_shape() -> None:
    data = serialize_bytes(np.array([b"a", b"bb", b"ccc", b"\x00"], dtype=object))
    out = deserialize_bytes(memoryview(data), [2, 2])
    assert out.shape == (2, 2)
    assert out.tolist() == [[b"a", b"bb"], [b"ccc", b"\x00"]]


def test_as_wire_array() -> None:
    array = np.arange(3)
    assert as_wire_array(array) is array
    assert_same(as_wire_array([1, 2]), np.array([1, 2]))
    torch = pytest.importorskip("torch")
    tensor = torch.ones(2, requires_grad=True)
    assert_same(as_wire_array(tensor), np.ones(2, dtype=np.float32))


def test_reader_lets_go_of_a_segment_the_writer_gave_back(packer: Packer, reader: ShmReader) -> None:
    big = np.zeros(10 << 20, dtype=np.uint8)
    descriptors, frames, segment = packer.pack([{"big": big}])
    unpack(descriptors[0], frames, segment, reader)
    assert reader.mapped_bytes == 16 << 20
    for _ in range(SHRINK_AFTER):
        descriptors, frames, segment = packer.pack([{"small": np.ones(4, dtype=np.int32)}])
        assert_same(unpack(descriptors[0], frames, segment, reader)["small"], np.ones(4, dtype=np.int32))
    assert segment == ""
    assert reader.mapped_bytes == 0
