"""Triton's BYTES wire format, vectorised: a 4-byte little-endian length before each element.

Per element the work is one C-level conversion (``tolist``, ``len``, ``bytes.join``); lengths and
offsets are laid out with numpy. Splitting a buffer whose elements all have one length (all empty,
fixed-size records) is numpy only; a buffer of varying lengths is walked once in Python, since
each length says where the next element starts.

:func:`install_stub_helpers` puts the same code in place of the Python backend's own helpers in
the stub, which convert every BYTES tensor a request brings and a response takes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

_LEN = struct.Struct("<I")
MAX_ELEMENT_BYTES = (1 << 32) - 1
"""The longest element a 4-byte length can describe."""
_JOIN_FROM = 256  # mean element size from which joining in Python beats the numpy scatter


def serialize_bytes(array: np.ndarray) -> bytes:
    """The wire format for an array of bytes/str objects.

    ``str`` elements are UTF-8 encoded, other non-bytes objects ``str()``-encoded; ``S`` arrays
    give their elements as numpy reads them (trailing NULs dropped).
    """
    return _layout(_element_bytes(array.reshape(-1)))


def deserialize_bytes(buffer: memoryview | bytes, shape: Sequence[int]) -> np.ndarray:
    """Object array of ``bytes`` of ``shape`` from the wire format."""
    count = int(np.prod(shape)) if len(shape) else 1
    if not count:
        return np.empty(shape, dtype=np.object_)
    raw = np.frombuffer(buffer, dtype=np.uint8)
    out = _split_uniform(raw, count)
    if out is None:
        out = _split(bytes(buffer), count)
    return out.reshape(shape)


def install_stub_helpers(pb_utils: Any) -> None:
    """Use this module in place of ``pb_utils``' BYTES helpers in this stub.

    The Python backend looks ``serialize_byte_tensor``/``deserialize_bytes_tensor`` up on the
    module each time it converts a BYTES tensor; its own versions loop in Python and hold several
    objects per element (5,000,000 empty elements: 1.3 GiB and seconds). The replacements keep
    their results, element for element.
    """
    if hasattr(pb_utils, "serialize_byte_tensor") and hasattr(pb_utils, "deserialize_bytes_tensor"):
        pb_utils.serialize_byte_tensor = stub_serialize
        pb_utils.deserialize_bytes_tensor = stub_deserialize


def stub_serialize(tensor: np.ndarray) -> bytes | tuple[()] | None:
    """``pb_utils.serialize_byte_tensor``'s contract: wire bytes, ``()`` when empty, None if not bytes.

    Object elements of type ``bytes`` are taken as they are and any other object as its ``str()``
    encoded in UTF-8; ``S`` elements as numpy reads them.
    """
    if tensor.size == 0:
        return ()
    flat = tensor.reshape(-1)
    if flat.dtype.kind == "S":
        return _layout(flat.tolist())
    if flat.dtype != np.object_:
        return None
    items = flat.tolist()
    if not set(map(type, items)) <= {bytes}:
        items = [item if type(item) is bytes else str(item).encode("utf-8") for item in items]
    return _layout(items)


def stub_deserialize(encoded: Any) -> np.ndarray:
    """``pb_utils.deserialize_bytes_tensor``'s contract: 1-D object array of every element."""
    raw = np.frombuffer(encoded, dtype=np.uint8)
    if raw.size < 4:
        if raw.size:
            raise ValueError(f"a BYTES tensor of {raw.size} bytes ends inside an element's length")
        return np.empty(0, dtype=np.object_)
    # If all elements are as long as the first, the element count follows from the size.
    stride = 4 + int(raw[:4].view("<u4")[0])
    out = _split_uniform(raw, raw.size // stride) if raw.size % stride == 0 else None
    return out if out is not None else _split(raw.tobytes(), None)


def _element_bytes(flat: np.ndarray) -> list[bytes]:
    """Each element as ``bytes``: one C-level pass for bytes/str arrays, a Python loop otherwise."""
    kind = flat.dtype.kind
    if kind == "S":
        return flat.tolist()  # type: ignore[no-any-return]
    if kind == "U":
        return list(map(str.encode, flat.tolist()))
    if kind == "O":
        items = flat.tolist()
        kinds = set(map(type, items))
        if kinds <= {bytes}:
            return items  # type: ignore[no-any-return]
        if kinds <= {str}:
            return list(map(str.encode, items))
    return [_to_bytes(item) for item in flat]


def _to_bytes(item: Any) -> bytes:
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item)
    return str(item).encode("utf-8")


def _layout(items: list[bytes]) -> bytes:
    """Length prefixes and elements, interleaved."""
    count = len(items)
    if not count:
        return b""
    lengths = np.fromiter(map(len, items), dtype=np.int64, count=count)
    longest = int(lengths.max())
    if longest > MAX_ELEMENT_BYTES:
        raise ValueError(f"a BYTES element has {longest} bytes; at most {MAX_ELEMENT_BYTES} fit the format")
    prefixes = lengths.astype("<u4").view(np.uint8).reshape(count, 4)
    if not longest:
        return prefixes.tobytes()
    data = b"".join(items)
    if int(lengths.min()) == longest:
        out = np.empty((count, 4 + longest), dtype=np.uint8)
        out[:, :4] = prefixes
        out[:, 4:] = np.frombuffer(data, dtype=np.uint8).reshape(count, longest)
        return out.tobytes()
    if len(data) >= _JOIN_FROM * count:  # few large elements: copying dominates, not the loop
        return b"".join(
            part for pair in zip(map(_LEN.pack, lengths.tolist()), items, strict=True) for part in pair
        )
    # Element i's prefix starts after i prefixes and the elements before it; the rest is data.
    starts = np.cumsum(lengths) - lengths
    starts += np.arange(0, 4 * count, 4, dtype=np.int64)
    out = np.empty(4 * count + len(data), dtype=np.uint8)
    is_data = np.ones(out.size, dtype=np.bool_)
    for k in range(4):
        out[starts + k] = prefixes[:, k]
        is_data[starts + k] = False
    out[is_data] = np.frombuffer(data, dtype=np.uint8)
    return out.tobytes()


def _split_uniform(raw: np.ndarray, count: int) -> np.ndarray | None:
    """The ``count`` elements when all have the same length, else None."""
    stride = raw.size // count
    if stride < 4 or stride * count != raw.size:
        return None
    rows = raw.reshape(count, stride)
    width = stride - 4
    if not bool((np.ascontiguousarray(rows[:, :4]).view("<u4") == width).all()):
        return None
    if not width:
        return np.full(count, b"", dtype=np.object_)
    values = np.ascontiguousarray(rows[:, 4:])
    out = values.view(f"S{width}").reshape(count).astype(np.object_)
    # numpy's fixed-width bytes drop trailing NULs: those elements are taken whole.
    for i in np.flatnonzero(values[:, -1] == 0).tolist():
        out[i] = values[i].tobytes()
    return out


def _split(data: bytes, count: int | None) -> np.ndarray:
    """Walk the elements one by one: ``count`` of them, or as many as ``data`` holds."""
    unpack_from = _LEN.unpack_from
    size = len(data)
    items: list[bytes] = []
    append = items.append
    pos = 0
    try:
        if count is None:
            while pos < size:
                (length,) = unpack_from(data, pos)
                pos += 4
                append(data[pos : pos + length])
                pos += length
        else:
            for _ in range(count):
                (length,) = unpack_from(data, pos)
                pos += 4
                append(data[pos : pos + length])
                pos += length
    except struct.error:
        raise ValueError(
            f"a BYTES tensor of {size} bytes ends inside element {len(items)}'s length"
        ) from None
    if pos > size:
        raise ValueError(f"a BYTES tensor of {size} bytes ends inside element {len(items) - 1}")
    out = np.empty(len(items), dtype=np.object_)
    out[:] = items
    return out
