"""Unit tests of pytriton_torch._dtypes: numpy <-> Triton datatype names."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from pytriton_torch._dtypes import (
    BF16,
    normalize_spec_dtype,
    numpy_to_triton,
    spec_to_triton,
    torch_to_wire,
    triton_to_numpy,
    wire_to_torch,
)
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


@pytest.mark.parametrize("name", ["FLOAT", "fp32", "", "TYPE_INVALID"])
def test_unknown_triton_name_raises(name: str) -> None:
    expected = name.removeprefix("TYPE_")
    with pytest.raises(PyTritonTorchValidationError, match="has no numpy equivalent") as info:
        triton_to_numpy(name)
    assert repr(expected) in str(info.value)


# -- bfloat16 --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["BF16", "TYPE_BF16"])
def test_bf16_is_ml_dtypes_bfloat16(name: str) -> None:
    assert triton_to_numpy(name) == np.dtype(ml_dtypes.bfloat16)
    assert numpy_to_triton(np.dtype(ml_dtypes.bfloat16)) == "BF16"


@pytest.mark.parametrize("dtype", ["BF16", "TYPE_BF16", "bfloat16", "torch", "ml_dtypes"])
def test_bf16_spec_dtype_is_normalized(dtype: object) -> None:
    torch = pytest.importorskip("torch")
    value = {"torch": torch.bfloat16, "ml_dtypes": ml_dtypes.bfloat16}.get(str(dtype), dtype)
    assert normalize_spec_dtype(value) is BF16
    assert spec_to_triton(normalize_spec_dtype(value)) == "BF16"


def test_torch_and_triton_names_normalize_to_numpy_types() -> None:
    torch = pytest.importorskip("torch")
    assert normalize_spec_dtype(torch.float16) is np.float16
    assert normalize_spec_dtype(torch.int64) is np.int64
    assert normalize_spec_dtype("FP32") is np.float32
    assert normalize_spec_dtype("TYPE_STRING") is np.object_
    with pytest.raises(PyTritonTorchValidationError, match="complex64 has no Triton equivalent"):
        normalize_spec_dtype(torch.complex64)
    with pytest.raises(PyTritonTorchValidationError, match="'weird' is not a dtype"):
        normalize_spec_dtype("weird")


def test_bf16_round_trip_through_torch_is_exact_and_zero_copy() -> None:
    torch = pytest.importorskip("torch")
    tensor = torch.randn(4, 3).to(torch.bfloat16)
    array = torch_to_wire(tensor)
    assert array.dtype == np.dtype(ml_dtypes.bfloat16) and array.shape == (4, 3)
    np.testing.assert_array_equal(array.astype(np.float32), tensor.float().numpy())
    back = wire_to_torch(array)
    assert back.dtype == torch.bfloat16 and torch.equal(back, tensor)
    assert back.data_ptr() == array.ctypes.data  # a view, not a copy


@pytest.mark.parametrize(("name", "config"), [("FP32", "TYPE_FP32"), ("BF16", "TYPE_BF16"), ("BYTES", "TYPE_STRING")])
def test_config_type(name: str, config: str) -> None:
    from pytriton_torch._dtypes import config_type

    assert config_type(name) == config


def test_torch_lookups_cover_every_torch_dtype_with_a_triton_name() -> None:
    import torch

    from pytriton_torch._dtypes import numpy_of_torch, torch_names, triton_of_torch

    for torch_name in torch_names():
        dtype = getattr(torch, torch_name)
        triton = triton_of_torch(dtype)
        assert triton is not None
        assert np.dtype(triton_to_numpy(triton)) == np.dtype(numpy_of_torch(dtype))
        assert numpy_of_torch(dtype) == normalize_spec_dtype(dtype)
    assert triton_of_torch(torch.bfloat16) == "BF16"
    assert numpy_of_torch(torch.bfloat16) is BF16
    assert triton_of_torch(torch.float32) == "FP32"
    assert triton_of_torch(torch.complex64) is None
    assert numpy_of_torch(torch.complex64) is None


def test_no_other_module_keeps_a_dtype_table() -> None:
    """Maps of torch/numpy dtypes to Triton names live only in _dtypes.py."""
    import pathlib
    import re

    import pytriton_torch

    root = pathlib.Path(pytriton_torch.__file__).parent
    table = re.compile(r"^\s*(torch\.float32|np\.float32|\"(TYPE_)?FP32\")\s*:", re.M)
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "_dtypes.py" and table.search(path.read_text())
    ]
    assert offenders == []
