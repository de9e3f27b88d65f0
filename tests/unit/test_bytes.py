"""Unit tests of pytriton_torch._channel._bytes: the vectorised BYTES codec against simple loops."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytriton_torch._channel._bytes import (
    deserialize_bytes,
    install_stub_helpers,
    serialize_bytes,
    stub_deserialize,
    stub_serialize,
)


def reference_serialize(array: np.ndarray, *, stub: bool = False) -> bytes:
    """One element at a time: ours encodes str and bytes-likes; the stub's keeps only exact bytes."""
    out = b""
    for item in array.reshape(-1):
        if stub and array.dtype == np.object_:
            data = item if type(item) is bytes else str(item).encode("utf-8")
        elif isinstance(item, bytes | bytearray | memoryview):
            data = bytes(item)
        else:
            data = str(item).encode("utf-8")
        out += struct.pack("<I", len(data)) + data
    return out


def reference_split(data: bytes) -> list[bytes]:
    items, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("<I", data, pos)
        items.append(data[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return items


def object_array(items: list[Any], shape: tuple[int, ...]) -> np.ndarray:
    array = np.empty(len(items), dtype=np.object_)
    array[:] = items
    return array.reshape(shape)


# Small alphabets make runs of equal lengths, empty elements and NULs likely.
ELEMENT = st.one_of(
    st.binary(max_size=6),
    st.sampled_from([b"", b"\x00", b"a\x00", b"\x00\x00\x00"]),
    st.binary(min_size=200, max_size=400),
)


def shaped(items: list[Any], layout: str) -> np.ndarray:
    """``items`` as a flat, one-row, one-column or two-row array."""
    if layout == "two rows":
        items = items[: len(items) // 2 * 2]
        return object_array(items, (2, len(items) // 2))
    shape = {"flat": (len(items),), "row": (1, len(items)), "column": (len(items), 1)}[layout]
    return object_array(items, shape)


@st.composite
def bytes_arrays(draw: st.DrawFn, element: st.SearchStrategy[Any] = ELEMENT) -> np.ndarray:
    if draw(st.booleans()):  # all elements one length: the numpy-only path
        width = draw(st.sampled_from([0, 1, 3, 8]))
        items: list[Any] = draw(st.lists(st.binary(min_size=width, max_size=width), max_size=40))
    else:
        items = draw(st.lists(element, max_size=40))
    return shaped(items, draw(st.sampled_from(["flat", "row", "column", "two rows"])))


@settings(max_examples=300, deadline=None)
@given(bytes_arrays())
def test_serialize_matches_reference(array: np.ndarray) -> None:
    assert serialize_bytes(array) == reference_serialize(array)


@settings(max_examples=300, deadline=None)
@given(bytes_arrays())
def test_deserialize_round_trips(array: np.ndarray) -> None:
    data = reference_serialize(array)
    out = deserialize_bytes(memoryview(data), list(array.shape))
    assert out.dtype == np.object_
    assert out.shape == array.shape
    assert out.tolist() == array.tolist()
    assert all(type(item) is bytes for item in out.reshape(-1))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.binary(max_size=5), st.text(max_size=5), st.integers(), st.floats()), max_size=30)
)
def test_serialize_mixed_objects_matches_reference(items: list[Any]) -> None:
    array = object_array(items, (len(items),))
    assert serialize_bytes(array) == reference_serialize(array)


@pytest.mark.parametrize(
    "array",
    [
        np.array(["ab", "ćd", ""]),
        np.array([b"ab\x00", b"c", b""], dtype="S3"),
        np.array([[1.5, 2.0]], dtype=np.float32),
        object_array([bytearray(b"x\x00"), memoryview(b"yz"), np.bytes_(b"q"), "é"], (2, 2)),
    ],
)
def test_serialize_other_dtypes_match_reference(array: np.ndarray) -> None:
    assert serialize_bytes(array) == reference_serialize(array)


@pytest.mark.parametrize("shape", [(0,), (0, 3), (3, 0)])
def test_zero_size(shape: tuple[int, ...]) -> None:
    array = np.empty(shape, dtype=np.object_)
    assert serialize_bytes(array) == b""
    out = deserialize_bytes(b"", list(shape))
    assert out.shape == shape
    assert out.dtype == np.object_


def test_zero_dim() -> None:
    array = np.array(b"a\x00", dtype=np.object_)
    data = serialize_bytes(array)
    assert data == b"\x02\x00\x00\x00a\x00"
    out = deserialize_bytes(data, [])
    assert out.shape == ()
    assert out.item() == b"a\x00"


def test_uniform_elements_keep_trailing_nuls() -> None:
    items = [b"ab\x00", b"\x00\x00\x00", b"abc", b"a\x00c"]
    out = deserialize_bytes(reference_serialize(object_array(items, (4,))), [4])
    assert out.tolist() == items


def test_many_empty_elements() -> None:
    count = 1_000_000
    array = np.full((count // 1000, 1000), b"", dtype=np.object_)
    data = serialize_bytes(array)
    assert data == bytes(4 * count)
    out = deserialize_bytes(memoryview(data), [count // 1000, 1000])
    assert out.shape == (count // 1000, 1000)
    assert (out == b"").all()


@pytest.mark.parametrize("data", [b"\x05\x00\x00\x00ab", b"\x01\x00", b"\x01\x00\x00\x00a\x03\x00\x00\x00a"])
def test_truncated_buffer_is_an_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="BYTES tensor of"):
        deserialize_bytes(data, [2])


@settings(max_examples=300, deadline=None)
@given(bytes_arrays())
def test_stub_deserialize_matches_reference(array: np.ndarray) -> None:
    data = reference_serialize(array)
    out = stub_deserialize(np.frombuffer(data, dtype=np.uint8))
    assert out.dtype == np.object_
    assert out.ndim == 1
    assert out.tolist() == reference_split(data)


@settings(max_examples=200, deadline=None)
@given(
    bytes_arrays(
        st.one_of(ELEMENT, st.text(max_size=4), st.integers(), st.builds(bytearray, st.binary(max_size=3)))
    )
)
def test_stub_serialize_matches_reference(array: np.ndarray) -> None:
    expected = reference_serialize(array, stub=True) if array.size else ()
    assert stub_serialize(array) == expected


def test_stub_serialize_other_dtypes() -> None:
    fixed = np.array([b"ab\x00", b""], dtype="S3")
    assert stub_serialize(fixed) == reference_serialize(fixed, stub=True)
    assert stub_serialize(np.zeros(2, dtype=np.float32)) is None
    assert stub_serialize(np.empty(0, dtype=np.object_)) == ()


def test_install_stub_helpers_replaces_both_or_nothing() -> None:
    class Utils:
        serialize_byte_tensor = staticmethod(lambda tensor: None)
        deserialize_bytes_tensor = staticmethod(lambda encoded: None)

    utils = Utils()
    install_stub_helpers(utils)
    assert utils.serialize_byte_tensor is stub_serialize
    assert utils.deserialize_bytes_tensor is stub_deserialize

    class Other:
        pass

    install_stub_helpers(Other)  # a backend without them is left alone
    assert not hasattr(Other, "serialize_byte_tensor")
