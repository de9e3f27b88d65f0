"""Unit tests of pytriton_torch._dtypes: numpy <-> Triton datatype names."""

from __future__ import annotations

import numpy as np
import pytest

from pytriton_torch._dtypes import numpy_to_triton, triton_to_numpy
from pytriton_torch.exceptions import PyTritonTorchValidationError

PAIRS = [
    (np.bool_, "BOOL"),
    (np.uint8, "UINT8"),
    (np.uint16, "UINT16"),
    (np.uint32, "UINT32"),
    (np.uint64, "UINT64"),
    (np.int8, "INT8"),
    (np.int16, "INT16"),
    (np.int32, "INT32"),
    (np.int64, "INT64"),
    (np.float16, "FP16"),
    (np.float32, "FP32"),
    (np.float64, "FP64"),
    (np.object_, "BYTES"),
]


@pytest.mark.parametrize(("np_type", "name"), PAIRS)
def test_numpy_to_triton(np_type: type, name: str) -> None:
    assert numpy_to_triton(np.dtype(np_type)) == name


@pytest.mark.parametrize(("np_type", "name"), PAIRS)
def test_triton_to_numpy(np_type: type, name: str) -> None:
    assert triton_to_numpy(name) == np.dtype(np_type)


@pytest.mark.parametrize(("np_type", "name"), PAIRS)
def test_round_trip(np_type: type, name: str) -> None:
    assert triton_to_numpy(numpy_to_triton(np.dtype(np_type))) == np.dtype(np_type)
    assert numpy_to_triton(triton_to_numpy(name)) == name


@pytest.mark.parametrize("dtype", [np.dtype("S5"), np.dtype("S"), np.dtype("U3"), np.dtype(object)])
def test_bytes_like_kinds_are_bytes(dtype: np.dtype) -> None:
    assert numpy_to_triton(dtype) == "BYTES"


@pytest.mark.parametrize(("name", "np_type"), [("TYPE_FP32", np.float32), ("TYPE_INT64", np.int64)])
def test_type_prefix_is_stripped(name: str, np_type: type) -> None:
    assert triton_to_numpy(name) == np.dtype(np_type)


@pytest.mark.parametrize("name", ["STRING", "TYPE_STRING", "BYTES", "TYPE_BYTES"])
def test_string_and_bytes_map_to_object(name: str) -> None:
    assert triton_to_numpy(name) == np.dtype(np.object_)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, "datetime64[s]", "timedelta64[s]", "V8"])
def test_unsupported_numpy_dtype_raises(dtype: object) -> None:
    with pytest.raises(PyTritonTorchValidationError, match=r"output 'y': dtype .* has no Triton equivalent"):
        numpy_to_triton(np.dtype(dtype), what="output 'y'")


def test_unsupported_dtype_error_lists_supported() -> None:
    with pytest.raises(PyTritonTorchValidationError) as info:
        numpy_to_triton(np.dtype(np.complex64))
    message = str(info.value)
    assert message.startswith("tensor: dtype complex64")
    for supported in ("float32", "int64", "bool", "bytes"):
        assert supported in message


@pytest.mark.parametrize("name", ["BF16", "TYPE_BF16", "FLOAT", "fp32", "", "TYPE_INVALID"])
def test_unknown_triton_name_raises(name: str) -> None:
    expected = name.removeprefix("TYPE_")
    with pytest.raises(PyTritonTorchValidationError, match="has no numpy equivalent") as info:
        triton_to_numpy(name)
    assert repr(expected) in str(info.value)
