"""The one table between numpy/torch dtypes, Triton datatype names and model-config ``TYPE_*`` names.

numpy itself has no bfloat16; BF16 tensors use ``ml_dtypes.bfloat16`` (the numpy extension type
that tritonclient uses for BF16 too), so they travel as their raw 2-byte words and are viewed,
never converted, on both sides. Torch infer functions see them as ``torch.bfloat16``.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from .exceptions import PyTritonTorchValidationError

BF16: Any = ml_dtypes.bfloat16
"""Spec dtype of a bfloat16 tensor; ``Tensor(dtype="BF16")`` and ``torch.bfloat16`` normalize to it."""
BF16_DTYPE = np.dtype(BF16)

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
    BF16_DTYPE: "BF16",
}
_NUMPY_BY_TRITON: dict[str, np.dtype] = {v: k for k, v in _TRITON_BY_NUMPY.items()}
_TORCH_NAMES = {
    "bool": np.bool_,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "float16": np.float16,
    "float32": np.float32,
    "float64": np.float64,
}


def wire_datatype(dtype: np.dtype) -> str | None:
    """Triton datatype name for a numpy dtype, or None when it has none (no error message built)."""
    return "BYTES" if dtype.kind in "SUO" else _TRITON_BY_NUMPY.get(dtype)


def numpy_to_triton(dtype: np.dtype, *, what: str = "tensor") -> str:
    """Triton datatype name (``"FP32"``) for a numpy dtype; bytes/str kinds map to ``BYTES``."""
    name = wire_datatype(dtype)
    if name is None:
        supported = ", ".join(sorted({str(d) for d in _TRITON_BY_NUMPY} | {"bytes"}))
        raise PyTritonTorchValidationError(
            f"{what}: dtype {dtype} has no Triton equivalent; expected one of {supported}"
        )
    return name


def triton_to_numpy(name: str) -> np.dtype:
    """Numpy dtype for a Triton datatype name (``"BYTES"`` -> object, ``"BF16"`` -> ``ml_dtypes.bfloat16``)."""
    name = name.removeprefix("TYPE_")
    if name == "STRING":
        name = "BYTES"
    try:
        return _NUMPY_BY_TRITON[name]
    except KeyError:
        raise PyTritonTorchValidationError(f"Triton datatype {name!r} has no numpy equivalent") from None


def normalize_spec_dtype(dtype: Any, *, what: str = "tensor") -> Any:
    """A spec dtype as a numpy scalar type, or :data:`BF16`.

    Accepts numpy dtypes and types, ``bytes``/``str``/``object`` (BYTES), torch dtypes, and
    Triton names (``"FP32"``, ``"TYPE_BF16"``, ``"BF16"``, ``"bfloat16"``).
    """
    if type(dtype).__module__ == "torch":  # a torch.dtype, without importing torch
        numpy_type = numpy_of_torch(dtype)
        if numpy_type is None:
            raise PyTritonTorchValidationError(f"{what}: dtype {dtype} has no Triton equivalent")
        return numpy_type
    if isinstance(dtype, str):
        name = dtype.removeprefix("TYPE_")
        if name in ("BF16", "bfloat16"):
            return BF16
        if name in _NUMPY_BY_TRITON or name == "STRING":
            return triton_to_numpy(name).type
    if isinstance(dtype, np.dtype):
        dtype = dtype.type
    if dtype in (bytes, str, np.str_):
        dtype = np.bytes_
    if dtype is object:
        dtype = np.object_
    try:
        numpy_to_triton(np.dtype(dtype), what=what)
    except TypeError:
        raise PyTritonTorchValidationError(f"{what}: {dtype!r} is not a dtype") from None
    return dtype


def spec_to_triton(dtype: Any, *, what: str = "tensor") -> str:
    """Triton datatype name of a (normalized) spec dtype."""
    return numpy_to_triton(np.dtype(dtype), what=what)


def config_type(name: str) -> str:
    """Model-config enum name of a Triton datatype name: ``"FP32"`` -> ``"TYPE_FP32"``, ``"BYTES"`` -> ``"TYPE_STRING"``."""
    return "TYPE_STRING" if name == "BYTES" else f"TYPE_{name}"


def torch_names() -> list[str]:
    """Names of the torch dtypes that have a Triton datatype (``"bool"``, ..., ``"bfloat16"``)."""
    return [*_TORCH_NAMES, "bfloat16"]


def numpy_of_torch(dtype: Any) -> Any:
    """Numpy scalar type (or :data:`BF16`) that carries a torch dtype, or None when it has none."""
    name = str(dtype).removeprefix("torch.")
    return BF16 if name == "bfloat16" else _TORCH_NAMES.get(name)


def triton_of_torch(dtype: Any) -> str | None:
    """Triton datatype name (``"FP32"``) of a torch dtype, or None when it has none."""
    numpy_type = numpy_of_torch(dtype)
    return None if numpy_type is None else _TRITON_BY_NUMPY[np.dtype(numpy_type)]


def torch_to_wire(tensor: Any) -> np.ndarray:
    """A host numpy view of a torch tensor (one device-to-host copy if it is on a device)."""
    import torch

    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    if tensor.dtype == torch.bfloat16:
        return np.asarray(tensor.contiguous().view(torch.int16).numpy()).view(BF16_DTYPE)
    return np.asarray(tensor.numpy())


def wire_to_torch(array: np.ndarray) -> Any:
    """A torch tensor viewing a numeric numpy array (bfloat16 included)."""
    import torch

    if array.dtype == BF16_DTYPE:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)
