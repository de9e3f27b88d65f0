"""Mapping between numpy dtypes and Triton's datatype names."""

from __future__ import annotations

import numpy as np

from .exceptions import PyTritonTorchValidationError

_TRITON_BY_NUMPY: dict[np.dtype, str] = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.object_): "BYTES",
}
_NUMPY_BY_TRITON: dict[str, np.dtype] = {v: k for k, v in _TRITON_BY_NUMPY.items()}


def numpy_to_triton(dtype: np.dtype, *, what: str = "tensor") -> str:
    """Triton datatype name (``"FP32"``) for a numpy dtype; bytes/str kinds map to ``BYTES``."""
    if dtype.kind in "SUO":
        return "BYTES"
    try:
        return _TRITON_BY_NUMPY[dtype]
    except KeyError:
        supported = ", ".join(sorted({str(d) for d in _TRITON_BY_NUMPY} | {"bytes"}))
        raise PyTritonTorchValidationError(
            f"{what}: dtype {dtype} has no Triton equivalent; expected one of {supported}"
        ) from None


def triton_to_numpy(name: str) -> np.dtype:
    """Numpy dtype for a Triton datatype name (``"BYTES"`` -> object)."""
    name = name.removeprefix("TYPE_")
    if name == "STRING":
        name = "BYTES"
    try:
        return _NUMPY_BY_TRITON[name]
    except KeyError:
        raise PyTritonTorchValidationError(f"Triton datatype {name!r} has no numpy equivalent") from None
