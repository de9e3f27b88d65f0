"""Decorated infer functions served for real, queried with PyTriton's own ModelClient."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pytriton.client import ModelClient

from pytriton_torch import ModelConfig, Tensor, Triton
from pytriton_torch.decorators import (
    batch,
    fill_optionals,
    first_value,
    group_by_values,
    sample,
    triton_context,
)

F32 = np.float32


@batch
def _add_sub(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"add": a + b, "sub": a - b}


@batch
def _as_list(a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    return [a * b, a / b]  # mapped to the declared outputs in order


@fill_optionals(b=np.array([10.0], dtype=F32))
@batch
def _with_default(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"add": a + b, "sub": a - b}


@batch
@first_value("scale")
def _scaled(a: np.ndarray, scale: np.float32) -> dict[str, np.ndarray]:
    return {"out": a * scale}


@sample
def _per_sample(a: np.ndarray) -> dict[str, np.ndarray]:
    return {"out": a[:, ::-1].copy()}


@batch
@group_by_values("n")
def _grouped(a: np.ndarray, n: np.ndarray) -> dict[str, np.ndarray]:
    assert len(set(n.reshape(-1).tolist())) == 1  # one value of n per call
    return {"out": a * n}


class WithContext:
    @triton_context
    def __call__(self, requests: list[Any], triton_context: Any) -> list[dict[str, np.ndarray]]:
        info = triton_context.model_configs[self]
        return [{"out": np.full_like(r["a"], len(info.outputs))} for r in requests]


AB = [Tensor(name="a", dtype=F32, shape=(-1,)), Tensor(name="b", dtype=F32, shape=(-1,))]
ADD_SUB = [Tensor(name="add", dtype=F32, shape=(-1,)), Tensor(name="sub", dtype=F32, shape=(-1,))]
OUT = [Tensor(name="out", dtype=F32, shape=(-1,))]


@pytest.fixture(scope="module")
def served(triton: Triton) -> Triton:
    config = ModelConfig(max_batch_size=8)
    triton.bind("add_sub", _add_sub, AB, ADD_SUB, config=config)
    triton.bind("as_list", _as_list, AB, ADD_SUB, config=config)
    triton.bind(
        "with_default",
        _with_default,
        [AB[0], Tensor(name="b", dtype=F32, shape=(1,), optional=True)],
        ADD_SUB,
        config=config,
    )
    triton.bind("scaled", _scaled, [AB[0], Tensor(name="scale", dtype=F32, shape=(1,))], OUT, config=config)
    triton.bind("per_sample", _per_sample, [AB[0]], OUT, config=config)
    triton.bind("grouped", _grouped, [AB[0], Tensor(name="n", dtype=F32, shape=(1,))], OUT, config=config)
    triton.bind("with_context", WithContext(), [AB[0]], OUT, config=config)
    return triton


def _client(triton: Triton, model: str) -> ModelClient:
    return ModelClient(triton.http_url, model, init_timeout_s=60)


def test_batch_with_pytriton_model_client(served: Triton) -> None:
    a = np.arange(6, dtype=F32).reshape(2, 3)
    b = np.ones((2, 3), dtype=F32)
    with _client(served, "add_sub") as client:
        result = client.infer_batch(a=a, b=b)
    assert np.array_equal(result["add"], a + b) and np.array_equal(result["sub"], a - b)


def test_list_result_maps_to_declared_outputs(served: Triton) -> None:
    a = np.full((1, 2), 6, dtype=F32)
    b = np.full((1, 2), 2, dtype=F32)
    with _client(served, "as_list") as client:
        result = client.infer_batch(a=a, b=b)
    assert result["add"].tolist() == [[12, 12]] and result["sub"].tolist() == [[3, 3]]


def test_fill_optionals_default(served: Triton) -> None:
    a = np.ones((2, 1), dtype=F32)
    with _client(served, "with_default") as client:
        result = client.infer_batch(a=a)
    assert result["add"].tolist() == [[11], [11]]


def test_first_value_and_sample(served: Triton) -> None:
    a = np.ones((2, 2), dtype=F32)
    with _client(served, "scaled") as client:
        assert client.infer_batch(a=a, scale=np.full((2, 1), 3, dtype=F32))["out"].tolist() == [
            [3, 3],
            [3, 3],
        ]
    with _client(served, "per_sample") as client:
        rows = np.array([[1, 2, 3]], dtype=F32)
        assert client.infer_batch(a=rows)["out"].tolist() == [[3, 2, 1]]  # each row reversed


def test_group_by_values(served: Triton) -> None:
    a = np.ones((3, 1), dtype=F32)
    n = np.array([[1], [2], [1]], dtype=F32)
    with _client(served, "grouped") as client:
        assert client.infer_batch(a=a, n=n)["out"].tolist() == [[1], [2], [1]]


def test_triton_context_on_a_callable_object(served: Triton) -> None:
    with _client(served, "with_context") as client:
        assert client.infer_batch(a=np.zeros((1, 2), dtype=F32))["out"].tolist() == [[1, 1]]
