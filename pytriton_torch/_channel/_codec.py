"""Packing tensors into a message (msgpack header + raw frames + shared memory) and back.

A tensor travels as a descriptor ``[name, datatype, shape, frame, offset, nbytes]``:
``frame >= 0`` is the index of a raw frame of the message (see ``_transport``) holding the
bytes; ``frame == -1`` means the bytes are at ``offset`` in the message's shared-memory segment. BYTES tensors are serialised as
Triton does (4-byte little-endian length before each element), so trailing NUL bytes survive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._dtypes import numpy_to_triton, torch_to_wire, triton_to_numpy, wire_datatype
from ._bytes import deserialize_bytes, serialize_bytes
from ._shm import ShmReader, ShmWriter, segment_aligned_size

INLINE_LIMIT = 64 * 1024
"""Tensors up to this many bytes travel inside the channel message; larger ones in shared memory."""

Descriptor = list[Any]


def as_wire_array(value: Any) -> np.ndarray:
    """A numpy array for any array-like the user returned (torch tensors on any device included)."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "__dlpack__") and hasattr(value, "detach"):  # torch.Tensor without importing torch
        return torch_to_wire(value)
    return np.asarray(value)


class Packer:
    """Builds outgoing messages; owns this side's shared-memory segment."""

    def __init__(self, writer: ShmWriter, inline_limit: int = INLINE_LIMIT) -> None:
        self._writer = writer
        self._inline_limit = inline_limit

    def close(self) -> None:
        self._writer.close()

    def pack(
        self, groups: Sequence[Mapping[str, np.ndarray]]
    ) -> tuple[list[list[Descriptor]], list[Any], str]:
        """Descriptors per group, raw frames, and the name of this side's segment ("" when none).

        The segment is named even when this message does not use it: the reader keeps only that
        one mapped, so it lets go of a segment the writer replaced or released.
        """
        out: list[list[Descriptor]] = []
        frames: list[Any] = []
        in_shm: list[tuple[Descriptor, np.ndarray | bytes]] = []  # written once the segment is sized
        shm_bytes = 0
        for group in groups:
            descriptors = []
            for name, value in group.items():
                array = value if type(value) is np.ndarray else as_wire_array(value)
                # The error text is only built for a dtype without a Triton name.
                datatype = wire_datatype(array.dtype) or numpy_to_triton(array.dtype, what=f"tensor {name!r}")
                payload: np.ndarray | bytes
                if datatype == "BYTES":
                    payload = serialize_bytes(array)
                    size = len(payload)
                else:
                    payload = array if array.flags.c_contiguous else np.ascontiguousarray(array)
                    size = payload.nbytes
                if size > self._inline_limit:
                    shm_bytes += segment_aligned_size(size)
                    descriptor = [name, datatype, list(array.shape), -1, 0, size]
                    in_shm.append((descriptor, payload))
                else:
                    descriptor = [name, datatype, list(array.shape), len(frames), 0, size]
                    frames.append(
                        payload if isinstance(payload, bytes) else payload.reshape(-1).view(np.uint8).data
                    )
                descriptors.append(descriptor)
            out.append(descriptors)
        self._writer.reset(shm_bytes)  # a message without shared memory counts in its sizing too
        if not shm_bytes:
            return out, frames, self._writer.name  # names the segment the reader may keep mapped
        for descriptor, payload in in_shm:
            if isinstance(payload, bytes):
                descriptor[4], descriptor[5] = self._writer.write_bytes(payload)
            else:
                descriptor[4], descriptor[5] = self._writer.write(payload)
        return out, frames, self._writer.name


def unpack(
    descriptors: Sequence[Descriptor], frames: Sequence[Any], segment: str, reader: ShmReader
) -> dict[str, np.ndarray]:
    """Arrays for one group of descriptors; numeric arrays view the frames/segment without copying."""
    out: dict[str, np.ndarray] = {}
    reader.retain(segment)
    for name, datatype, shape, frame, offset, nbytes in descriptors:
        buffer = reader.view(segment, offset, nbytes) if frame < 0 else memoryview(frames[frame])
        if datatype == "BYTES":
            out[name] = deserialize_bytes(buffer, shape)
        else:
            array = np.frombuffer(buffer, dtype=triton_to_numpy(datatype)).reshape(shape)
            # Callers get writable arrays: read-only frames (the zmq transport's) are copied; they are small.
            out[name] = array if array.flags.writeable else array.copy()
    return out
