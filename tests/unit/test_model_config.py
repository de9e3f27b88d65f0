"""Unit tests of pytriton_torch.model_config: Tensor normalisation and ModelConfig checks."""

from __future__ import annotations

import numpy as np
import pytest

from pytriton_torch.exceptions import PyTritonTorchValidationError
from pytriton_torch.model_config import (
    DynamicBatcher,
    ModelConfig,
    QueuePolicy,
    Tensor,
    TimeoutAction,
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (np.dtype(np.float32), np.float32),
        (np.dtype("int64"), np.int64),
        (np.dtype(np.bool_), np.bool_),
        (np.float16, np.float16),
        (bytes, np.bytes_),
        (str, np.bytes_),
        (np.str_, np.bytes_),
        (np.bytes_, np.bytes_),
        (np.dtype("S"), np.bytes_),
        (np.dtype("U"), np.bytes_),
        (object, np.object_),
        (np.dtype(object), np.object_),
    ],
)
def test_tensor_dtype_normalised(given: object, expected: type) -> None:
    tensor = Tensor(name="t", dtype=given, shape=(1,))
    assert tensor.dtype is expected


def test_tensor_shape_becomes_tuple_of_ints() -> None:
    tensor = Tensor(name="t", dtype=np.float32, shape=[np.int64(3), -1, 2])  # type: ignore[arg-type]
    assert tensor.shape == (3, -1, 2)
    assert isinstance(tensor.shape, tuple)
    assert all(type(d) is int for d in tensor.shape)


def test_tensor_defaults() -> None:
    tensor = Tensor(shape=(-1,), dtype=np.int32)
    assert tensor.name is None
    assert tensor.optional is False


def test_tensor_is_frozen() -> None:
    tensor = Tensor(name="t", dtype=np.float32, shape=(1,))
    with pytest.raises(AttributeError):
        tensor.name = "other"  # type: ignore[misc]


def test_empty_shape_allowed() -> None:
    assert Tensor(name="scalar", dtype=np.float32, shape=()).shape == ()


@pytest.mark.parametrize("shape", [(0,), (3, 0), (-2,), (4, -5)])
def test_invalid_dimension_raises_with_name(shape: tuple[int, ...]) -> None:
    with pytest.raises(PyTritonTorchValidationError, match="positive or -1") as info:
        Tensor(name="my_input", dtype=np.float32, shape=shape)
    assert "'my_input'" in str(info.value)


@pytest.mark.parametrize("shape", ["abc", "12", 3, None])
def test_non_sequence_shape_raises_with_name(shape: object) -> None:
    with pytest.raises(PyTritonTorchValidationError, match="shape must be a tuple of ints") as info:
        Tensor(name="my_input", dtype=np.float32, shape=shape)  # type: ignore[arg-type]
    assert "'my_input'" in str(info.value)


def test_non_numeric_dimension_raises_validation_error() -> None:
    with pytest.raises(PyTritonTorchValidationError, match="'my_input'"):
        Tensor(name="my_input", dtype=np.float32, shape=("x",))  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, np.dtype("datetime64[s]")])
def test_dtype_without_triton_equivalent_raises_with_name(dtype: object) -> None:
    with pytest.raises(PyTritonTorchValidationError, match="has no Triton equivalent") as info:
        Tensor(name="weird", dtype=dtype, shape=(1,))
    assert "tensor 'weird'" in str(info.value)


@pytest.mark.parametrize("max_batch_size", [0, -1])
def test_model_config_batching_needs_positive_max_batch_size(max_batch_size: int) -> None:
    with pytest.raises(PyTritonTorchValidationError, match="max_batch_size must be >= 1") as info:
        ModelConfig(max_batch_size=max_batch_size)
    assert str(max_batch_size) in str(info.value)


def test_model_config_without_batching_accepts_zero() -> None:
    config = ModelConfig(batching=False, max_batch_size=0)
    assert config.max_batch_size == 0
    assert config.batching is False


def test_model_config_defaults() -> None:
    config = ModelConfig()
    assert config.batching is True
    assert config.max_batch_size == 4
    assert config.batcher == DynamicBatcher()
    assert config.response_cache is False
    assert config.decoupled is False
    assert config.model_warmup is None
    assert config.parameters == {}
    assert config.timeout_s is None


def test_model_config_defaults_are_not_shared() -> None:
    first, second = ModelConfig(), ModelConfig()
    first.parameters["a"] = "1"
    assert second.parameters == {}
    assert first.batcher is not second.batcher


def test_queue_policy_defaults() -> None:
    policy = QueuePolicy()
    assert policy.timeout_action is TimeoutAction.REJECT
    assert policy.default_timeout_microseconds == 0
    assert policy.allow_timeout_override is False
    assert policy.max_queue_size == 0


def test_max_concurrent_streams_default_and_validation() -> None:
    assert ModelConfig().max_concurrent_streams == 64
    with pytest.raises(PyTritonTorchValidationError, match="max_concurrent_streams must be >= 1, got 0"):
        ModelConfig(decoupled=True, max_concurrent_streams=0)
