"""Unit tests of pytriton_torch.decorators: requests are built directly, no server runs."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest

from pytriton_torch._context import ModelInfo, TritonContext, inject_context
from pytriton_torch._types import Request
from pytriton_torch.decorators import (
    ConstantPadder,
    batch,
    fill_optionals,
    first_value,
    get_model_config,
    group_by_keys,
    group_by_values,
    pad_batch,
    sample,
    triton_context,
)
from pytriton_torch.exceptions import PyTritonTorchBadParameterError, PyTritonTorchValidationError
from pytriton_torch.model_config import Tensor


def make_info(
    inputs: dict[str, tuple[Any, tuple[int, ...]]] | None = None,
    outputs: dict[str, tuple[Any, tuple[int, ...]]] | None = None,
    *,
    batching: bool = True,
    max_batch_size: int = 8,
    decoupled: bool = False,
) -> ModelInfo:
    inputs = {"x": (np.float32, (-1,))} if inputs is None else inputs
    outputs = {"y": (np.float32, (-1,))} if outputs is None else outputs
    return ModelInfo(
        model_name="model",
        inputs=tuple(Tensor(name=n, dtype=d, shape=s) for n, (d, s) in inputs.items()),
        outputs=tuple(Tensor(name=n, dtype=d, shape=s) for n, (d, s) in outputs.items()),
        batching=batching,
        max_batch_size=max_batch_size if batching else 0,
        decoupled=decoupled,
    )


def req(parameters: dict[str, Any] | None = None, **arrays: np.ndarray) -> Request:
    return Request(dict(arrays), parameters=parameters or {}, request_id="r")


def f32(*rows: list[float]) -> np.ndarray:
    return np.array(rows, dtype=np.float32)


def obj(*items: Any) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = list(items)
    return out


# ------------------------------------------------------------------------------------------ @batch


def test_batch_concatenates_inputs_and_splits_outputs_per_request() -> None:
    seen: dict[str, np.ndarray] = {}

    @batch
    def infer(x: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
        seen["x"], seen["w"] = x, w
        return {"y": x * w}

    requests = [
        req(x=f32([1, 2], [3, 4]), w=f32([1, 1], [2, 2])),
        req(x=f32([5, 6]), w=f32([10, 10])),
    ]
    responses = infer(requests)

    np.testing.assert_array_equal(seen["x"], f32([1, 2], [3, 4], [5, 6]))
    np.testing.assert_array_equal(seen["w"], f32([1, 1], [2, 2], [10, 10]))
    assert len(responses) == 2
    np.testing.assert_array_equal(responses[0]["y"], f32([1, 2], [6, 8]))
    np.testing.assert_array_equal(responses[1]["y"], f32([50, 60]))


def test_batch_single_request_gets_its_own_arrays() -> None:
    x = f32([1, 2, 3])

    @batch
    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": x + 1}

    seen = []

    @batch
    def spy(x: np.ndarray) -> dict[str, np.ndarray]:
        seen.append(x)
        return {"y": x}

    assert infer([req(x=x)])[0]["y"].tolist() == [[2, 3, 4]]
    spy([req(x=x)])
    assert seen[0] is x


def test_batch_maps_list_and_tuple_outputs_in_declared_order() -> None:
    info = make_info(outputs={"first": (np.float32, (-1,)), "second": (np.int64, (1,))})

    @batch
    def as_list(x: np.ndarray) -> list[np.ndarray]:
        return [x * 10, np.arange(len(x), dtype=np.int64).reshape(-1, 1)]

    @batch
    def as_tuple(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x - 1, np.full((len(x), 1), 7, dtype=np.int64)

    inject_context(as_list, info)
    inject_context(as_tuple, info)
    requests = [req(x=f32([1], [2])), req(x=f32([3]))]

    listed = as_list(requests)
    assert list(listed[0]) == ["first", "second"]
    np.testing.assert_array_equal(listed[0]["first"], f32([10], [20]))
    np.testing.assert_array_equal(listed[1]["first"], f32([30]))
    assert listed[0]["second"].tolist() == [[0], [1]]
    assert listed[1]["second"].tolist() == [[2]]

    tupled = as_tuple(requests)
    np.testing.assert_array_equal(tupled[1]["first"], f32([2]))
    assert tupled[1]["second"].tolist() == [[7]]


def test_batch_list_output_with_wrong_length_names_the_outputs() -> None:
    info = make_info(outputs={"a": (np.float32, (-1,)), "b": (np.float32, (-1,))})

    @batch
    def infer(x: np.ndarray) -> list[np.ndarray]:
        return [x]

    inject_context(infer, info)
    with pytest.raises(PyTritonTorchValidationError, match=r"1 items; expected 2.*\(a, b\)"):
        infer([req(x=f32([1]))])


def test_batch_list_output_needs_a_binding() -> None:
    @batch
    def infer(x: np.ndarray) -> list[np.ndarray]:
        return [x]

    with pytest.raises(PyTritonTorchValidationError, match=r"Triton.bind"):
        infer([req(x=f32([1]))])


def test_batch_rejects_output_with_wrong_batch_size() -> None:
    @batch
    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": x, "bad": x[:1]}

    with pytest.raises(PyTritonTorchValidationError) as excinfo:
        infer([req(x=f32([1], [2])), req(x=f32([3]))])
    message = str(excinfo.value)
    assert "'bad'" in message
    assert "batch size 1" in message
    assert "expected batch size 3" in message


def test_batch_rejects_scalar_output() -> None:
    @batch
    def infer(x: np.ndarray) -> dict[str, Any]:
        return {"y": 1.5}

    with pytest.raises(PyTritonTorchValidationError, match=r"'y'.*float"):
        infer([req(x=f32([1]))])


def test_batch_rejects_requests_with_different_inputs() -> None:
    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": inputs["x"]}

    with pytest.raises(PyTritonTorchValidationError, match=r"request 1 has \['t', 'x'\].*group_by_keys"):
        infer([req(x=f32([1])), req(x=f32([2]), t=f32([1]))])


def test_batch_rejects_shapes_that_cannot_be_joined() -> None:
    @batch
    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": x}

    with pytest.raises(PyTritonTorchValidationError, match=r"input 'x'.*\(1, 2\), \(1, 3\)"):
        infer([req(x=f32([1, 2])), req(x=f32([1, 2, 3]))])


def test_batch_rejects_inputs_of_one_request_with_different_batch_sizes() -> None:
    @batch
    def infer(x: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": x}

    with pytest.raises(PyTritonTorchValidationError, match="input 'w' has batch size 1 but input 'x' has 2"):
        infer([req(x=f32([1], [2]), w=f32([1]))])


def test_batch_passes_extra_keyword_arguments_and_drops_parameters() -> None:
    received: dict[str, Any] = {}

    @batch
    def infer(**kwargs: Any) -> dict[str, np.ndarray]:
        received.update(kwargs)
        return {"y": kwargs["x"]}

    infer([req({"temperature": 0.5}, x=f32([1]))], extra="value")
    assert set(received) == {"x", "extra"}
    assert received["extra"] == "value"


def test_batch_without_batching_does_not_check_the_first_dimension() -> None:
    info = make_info(batching=False)

    @batch
    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": np.concatenate([x, x])}

    inject_context(infer, info)
    responses = infer([req(x=f32([1, 2]))])
    np.testing.assert_array_equal(responses[0]["y"], f32([1, 2], [1, 2]))


def test_batch_keeps_trailing_nul_bytes() -> None:
    seen = {}

    @batch
    def infer(text: np.ndarray) -> dict[str, np.ndarray]:
        seen["text"] = text
        return {"echo": text}

    first = obj(b"ab\x00", b"\x00\x00").reshape(2, 1)
    second = obj(b"c\x00").reshape(1, 1)
    responses = infer([req(text=first), req(text=second)])

    assert seen["text"].dtype == object
    assert seen["text"].ravel().tolist() == [b"ab\x00", b"\x00\x00", b"c\x00"]
    assert responses[0]["echo"].dtype == object
    assert responses[0]["echo"].ravel().tolist() == [b"ab\x00", b"\x00\x00"]
    assert responses[1]["echo"].ravel().tolist() == [b"c\x00"]


def test_batch_generator_yields_split_responses() -> None:
    @batch
    def stream(x: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
        for step in range(3):
            yield {"y": x + step}

    result = stream([req(x=f32([0], [10])), req(x=f32([100]))])
    assert inspect.isgenerator(result)
    chunks = list(result)
    assert len(chunks) == 3
    assert [len(chunk) for chunk in chunks] == [2, 2, 2]
    np.testing.assert_array_equal(chunks[2][0]["y"], f32([2], [12]))
    np.testing.assert_array_equal(chunks[2][1]["y"], f32([102]))


def test_batch_generator_checks_each_item() -> None:
    @batch
    def stream(x: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
        yield {"y": x}
        yield {"y": x[:1]}

    chunks = stream([req(x=f32([1], [2]))])
    assert next(chunks)[0]["y"].shape == (2, 1)
    with pytest.raises(
        PyTritonTorchValidationError, match=r"output 'y'.*batch size 1.*expected batch size 2"
    ):
        next(chunks)


def test_batch_coroutine_function_returns_awaitable_split_result() -> None:
    @batch
    async def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        await asyncio.sleep(0)
        return {"y": x * 3}

    assert inspect.iscoroutinefunction(infer)
    result = infer([req(x=f32([1])), req(x=f32([2], [3]))])
    assert inspect.isawaitable(result)
    responses = asyncio.run(result)
    np.testing.assert_array_equal(responses[0]["y"], f32([3]))
    np.testing.assert_array_equal(responses[1]["y"], f32([6], [9]))


def test_batch_async_generator_yields_split_responses() -> None:
    @batch
    async def stream(x: np.ndarray) -> AsyncIterator[dict[str, np.ndarray]]:
        for step in range(2):
            await asyncio.sleep(0)
            yield {"y": x * step}

    async def collect() -> list[Any]:
        return [chunk async for chunk in stream([req(x=f32([1])), req(x=f32([2]))])]

    chunks = asyncio.run(collect())
    assert len(chunks) == 2
    np.testing.assert_array_equal(chunks[1][0]["y"], f32([1]))
    np.testing.assert_array_equal(chunks[1][1]["y"], f32([2]))
    np.testing.assert_array_equal(chunks[0][1]["y"], f32([0]))


def test_batch_on_methods_of_a_class() -> None:
    class Model:
        def __init__(self, scale: float) -> None:
            self.scale = scale

        @batch
        def infer(self, x: np.ndarray) -> list[np.ndarray]:
            return [x * self.scale]

    info = make_info()
    model = Model(4.0)
    inject_context(model.infer, info)
    responses = model.infer([req(x=f32([1], [2])), req(x=f32([3]))])
    np.testing.assert_array_equal(responses[0]["y"], f32([4], [8]))
    np.testing.assert_array_equal(responses[1]["y"], f32([12]))
    assert get_model_config(model.infer, model) is info


def test_batch_on_a_callable_object() -> None:
    class Model:
        @batch
        def __call__(self, x: np.ndarray) -> list[np.ndarray]:
            return [x + 0.5]

    model = Model()
    inject_context(model, make_info())
    responses = model([req(x=f32([1])), req(x=f32([2]))])
    assert [r["y"].tolist() for r in responses] == [[[1.5]], [[2.5]]]


def test_batch_requires_the_requests_list() -> None:
    @batch
    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": x}

    with pytest.raises(PyTritonTorchValidationError, match="list of requests"):
        infer(x=f32([1]))


# ------------------------------------------------------------------------------------------ @sample


def test_sample_calls_once_per_request() -> None:
    calls = []

    @sample
    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(x.copy())
        return {"y": x.sum(keepdims=True)}

    responses = infer([req(x=f32([1, 2])), req(x=f32([3, 4], [5, 6]))])
    assert len(calls) == 2
    np.testing.assert_array_equal(calls[1], f32([3, 4], [5, 6]))
    assert [r["y"].tolist() for r in responses] == [[[3.0]], [[18.0]]]


def test_sample_maps_list_outputs_and_works_on_methods() -> None:
    class Model:
        @sample
        def infer(self, x: np.ndarray) -> list[np.ndarray]:
            return [x * 2, x * 3]

    info = make_info(outputs={"a": (np.float32, (-1,)), "b": (np.float32, (-1,))}, batching=False)
    model = Model()
    inject_context(model.infer, info)
    responses = model.infer([req(x=np.array([1.0], np.float32))])
    assert responses[0]["a"].tolist() == [2.0]
    assert responses[0]["b"].tolist() == [3.0]


def test_sample_generator_and_coroutine() -> None:
    @sample
    def stream(x: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
        yield {"y": x}
        yield {"y": x * 2}

    chunks = list(stream([req(x=f32([1])), req(x=f32([5]))]))
    assert [[r["y"].tolist() for r in chunk] for chunk in chunks] == [[[[1.0]], [[5.0]]], [[[2.0]], [[10.0]]]]

    @sample
    async def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": -x}

    responses = asyncio.run(infer([req(x=f32([1])), req(x=f32([2]))]))
    assert [r["y"].tolist() for r in responses] == [[[-1.0]], [[-2.0]]]


def test_sample_generators_of_different_lengths_are_an_error() -> None:
    @sample
    def stream(x: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
        for _ in range(int(x[0, 0])):
            yield {"y": x}

    chunks = stream([req(x=f32([1])), req(x=f32([2]))])
    assert len(next(chunks)) == 2
    with pytest.raises(PyTritonTorchValidationError, match="different numbers of items"):
        next(chunks)


# ------------------------------------------------------------------------------------------ @group_by_keys


def test_group_by_keys_calls_per_key_set_and_restores_order() -> None:
    groups: list[list[Request]] = []

    @group_by_keys
    def infer(requests: list[Request]) -> list[dict[str, np.ndarray]]:
        groups.append(requests)
        return [{"y": r["x"] + (100 if "t" in r else 0)} for r in requests]

    requests = [
        req({"id": 0}, x=f32([0])),
        req({"id": 1}, x=f32([1]), t=f32([1])),
        req({"id": 2}, x=f32([2])),
        req({"id": 3}, t=f32([1]), x=f32([3])),
    ]
    responses = infer(requests)

    assert sorted(len(group) for group in groups) == [2, 2]
    assert all(r is requests[r.parameters["id"]] for group in groups for r in group)
    assert [r["y"].tolist() for r in responses] == [[[0.0]], [[101.0]], [[2.0]], [[103.0]]]


def test_group_by_keys_with_batch_below() -> None:
    calls = []

    @group_by_keys
    @batch
    def infer(x: np.ndarray, t: np.ndarray | None = None) -> dict[str, np.ndarray]:
        calls.append(t is None)
        return {"y": x if t is None else x * t}

    responses = infer([req(x=f32([1]), t=f32([3])), req(x=f32([2])), req(x=f32([4]), t=f32([5]))])
    assert sorted(calls) == [False, True]
    assert [r["y"].tolist() for r in responses] == [[[3.0]], [[2.0]], [[20.0]]]


def test_group_by_keys_merges_async_results() -> None:
    @group_by_keys
    @batch
    async def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": inputs["x"] * len(inputs)}

    responses = asyncio.run(infer([req(x=f32([1]), t=f32([0])), req(x=f32([2]))]))
    assert [r["y"].tolist() for r in responses] == [[[2.0]], [[2.0]]]


def test_group_by_keys_rejects_wrong_number_of_responses() -> None:
    @group_by_keys
    def infer(requests: list[Request]) -> list[dict[str, np.ndarray]]:
        return []

    with pytest.raises(PyTritonTorchValidationError, match="group of 1 requests and returned 0 responses"):
        infer([req(x=f32([1])), req(t=f32([1]))])


# ------------------------------------------------------------------------------------------ @group_by_values


def test_group_by_values_calls_per_value_and_restores_rows() -> None:
    calls: list[tuple[list[float], list[float]]] = []

    @batch
    @group_by_values("mode")
    def infer(x: np.ndarray, mode: np.ndarray) -> dict[str, np.ndarray]:
        calls.append((x.ravel().tolist(), mode.ravel().tolist()))
        return {"y": x * mode}

    responses = infer(
        [
            req(x=f32([1], [2]), mode=f32([10], [20])),
            req(x=f32([3], [4]), mode=f32([10], [20])),
        ]
    )
    assert sorted(calls) == [([1.0, 3.0], [10.0, 10.0]), ([2.0, 4.0], [20.0, 20.0])]
    assert responses[0]["y"].ravel().tolist() == [10.0, 40.0]
    assert responses[1]["y"].ravel().tolist() == [30.0, 80.0]


def test_group_by_values_distinguishes_trailing_nul_bytes() -> None:
    calls = []

    @batch
    @group_by_values("key")
    def infer(key: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(key.ravel().tolist())
        return {"y": key}

    key = obj(b"a", b"a\x00", b"a").reshape(3, 1)
    responses = infer([req(key=key, x=f32([1], [2], [3]))])
    assert sorted(calls) == [[b"a", b"a"], [b"a\x00"]]
    assert responses[0]["y"].dtype == object
    assert responses[0]["y"].ravel().tolist() == [b"a", b"a\x00", b"a"]


def test_group_by_values_with_constant_padder() -> None:
    @batch
    @group_by_values("n", pad_fn=ConstantPadder(-1))
    def infer(n: np.ndarray) -> dict[str, np.ndarray]:
        length = int(n[0, 0])
        tokens = np.tile(np.arange(length, dtype=np.int32), (len(n), 1))
        return {"tokens": tokens}

    responses = infer([req(n=np.array([[2], [3], [2]], dtype=np.int32))])
    assert responses[0]["tokens"].tolist() == [[0, 1, -1], [0, 1, 2], [0, 1, -1]]


def test_group_by_values_without_padder_reports_shapes() -> None:
    @batch
    @group_by_values("n")
    def infer(n: np.ndarray) -> dict[str, np.ndarray]:
        return {"tokens": np.zeros((len(n), int(n[0, 0])), dtype=np.int32)}

    with pytest.raises(PyTritonTorchValidationError, match=r"output 'tokens'.*\(1, 2\).*ConstantPadder"):
        infer([req(n=np.array([[2], [3]], dtype=np.int32))])


def test_group_by_values_above_batch_is_rejected() -> None:
    @group_by_values("x")
    @batch
    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": x}

    with pytest.raises(PyTritonTorchBadParameterError, match="below @batch"):
        infer([req(x=f32([1]))])


def test_group_by_values_rejects_non_string_keys() -> None:
    with pytest.raises(PyTritonTorchBadParameterError, match="keys must be input names"):
        group_by_values(lambda x: x)  # type: ignore[arg-type]


def test_group_by_values_merges_coroutines_and_checks_group_sizes() -> None:
    @batch
    @group_by_values("g")
    async def infer(g: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": g * 2}

    responses = asyncio.run(infer([req(g=np.array([[1], [2], [1]], dtype=np.int64))]))
    assert responses[0]["y"].ravel().tolist() == [2, 4, 2]

    @batch
    @group_by_values("g")
    def broken(g: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": g[:1]}

    with pytest.raises(PyTritonTorchValidationError, match=r"output 'y'.*group of 2 rows has batch size 1"):
        broken([req(g=np.array([[1], [2], [1]], dtype=np.int64))])


# ------------------------------------------------------------------------------------------ ConstantPadder


def test_constant_padder_pads_numeric_and_bytes() -> None:
    padder = ConstantPadder(pad_value=9)
    padded = padder(
        [
            {"a": np.array([[1]], dtype=np.int64), "s": obj(b"x\x00").reshape(1, 1)},
            {"a": np.array([[1, 2, 3]], dtype=np.int64), "s": obj(b"y", b"z").reshape(1, 2)},
        ]
    )
    assert padded[0]["a"].tolist() == [[1, 9, 9]]
    assert padded[1]["a"].tolist() == [[1, 2, 3]]
    assert padded[0]["s"].dtype == object
    assert padded[0]["s"].tolist() == [[b"x\x00", b""]]


def test_constant_padder_widens_fixed_bytes_and_rejects_mixed_dtypes() -> None:
    padded = ConstantPadder()([{"s": np.array([[b"ab"]])}, {"s": np.array([[b"abcd", b"e"]])}])
    assert padded[0]["s"].dtype == np.dtype("S4")
    assert padded[0]["s"].tolist() == [[b"ab", b""]]

    with pytest.raises(PyTritonTorchValidationError, match="'a' have different dtypes"):
        ConstantPadder()([{"a": np.zeros((1, 1), np.int32)}, {"a": np.zeros((1, 1), np.int64)}])


# ------------------------------------------------------------------------------------------ @pad_batch


def test_pad_batch_repeats_last_row_and_trims_outputs() -> None:
    seen = {}

    @batch
    @pad_batch
    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        seen["x"] = x
        return {"y": x * 2}

    inject_context(infer, make_info(max_batch_size=4))
    responses = infer([req(x=f32([1], [2])), req(x=f32([3]))])
    assert seen["x"].ravel().tolist() == [1.0, 2.0, 3.0, 3.0]
    assert [r["y"].ravel().tolist() for r in responses] == [[2.0, 4.0], [6.0]]


def test_pad_batch_uses_preferred_batch_sizes_of_the_model_info() -> None:
    info = dataclasses.replace(make_info(max_batch_size=16), preferred_batch_sizes=(4, 8))
    sizes = []

    @batch
    @pad_batch
    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        sizes.append(len(x))
        return {"y": x}

    inject_context(infer, info)
    infer([req(x=np.zeros((5, 1), np.float32))])
    infer([req(x=np.zeros((9, 1), np.float32))])
    infer([req(x=np.zeros((4, 1), np.float32))])
    assert sizes == [8, 16, 4]


def test_pad_batch_rejects_models_without_batching() -> None:
    @pad_batch
    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": x}

    inject_context(infer, make_info(batching=False))
    with pytest.raises(PyTritonTorchBadParameterError, match="does not batch"):
        infer(x=f32([1]))


# ------------------------------------------------------------------------------------------ @first_value


def test_first_value_below_batch_squeezes_to_scalar() -> None:
    seen: dict[str, Any] = {}

    @batch
    @first_value("temperature", "name")
    def infer(x: np.ndarray, temperature: Any, name: Any) -> dict[str, np.ndarray]:
        seen["temperature"], seen["name"] = temperature, name
        return {"y": x * temperature}

    inject_context(infer, make_info())
    responses = infer(
        [
            req(x=f32([1], [2]), temperature=f32([0.5], [0.5]), name=obj(b"n\x00", b"n\x00").reshape(2, 1)),
        ]
    )
    assert seen["temperature"] == np.float32(0.5)
    assert np.ndim(seen["temperature"]) == 0
    assert seen["name"] == b"n\x00"
    assert responses[0]["y"].ravel().tolist() == [0.5, 1.0]


def test_first_value_strict_and_non_strict() -> None:
    @batch
    @first_value("t")
    def strict_fn(x: np.ndarray, t: Any) -> dict[str, np.ndarray]:
        return {"y": x}

    @batch
    @first_value("t", strict=False, squeeze_single_values=False)
    def lenient(x: np.ndarray, t: Any) -> dict[str, np.ndarray]:
        return {"y": x + t}

    inject_context(strict_fn, make_info())
    inject_context(lenient, make_info())
    requests = [req(x=f32([0], [0]), t=f32([1], [2]))]
    with pytest.raises(
        PyTritonTorchValidationError,
        match=r"rows of input 't' are not all equal \(\[\[1\.\], \[2\.\]\]\).*strict=False",
    ):
        strict_fn(requests)
    responses = lenient(requests)
    assert responses[0]["y"].ravel().tolist() == [1.0, 1.0]


def test_first_value_on_requests_keeps_parameters_and_leaves_originals() -> None:
    seen: list[Request] = []

    @first_value("t")
    def infer(requests: list[Request]) -> list[dict[str, np.ndarray]]:
        seen.extend(requests)
        return [{"y": r["x"] * r["t"]} for r in requests]

    inject_context(infer, make_info())
    original = req({"user": "u1"}, x=f32([1], [2]), t=np.array([[3], [3]], dtype=np.int64))
    responses = infer([original])
    assert seen[0].parameters == {"user": "u1"}
    assert seen[0]["t"] == 3
    assert original["t"].shape == (2, 1)
    assert responses[0]["y"].ravel().tolist() == [3.0, 6.0]


def test_first_value_needs_batching_and_rejects_reserved_keys() -> None:
    @first_value("t")
    def infer(**inputs: Any) -> dict[str, np.ndarray]:
        return {}

    inject_context(infer, make_info(batching=False))
    with pytest.raises(PyTritonTorchBadParameterError, match="does not batch"):
        infer(t=f32([1]))
    with pytest.raises(PyTritonTorchBadParameterError, match="'triton_context'"):
        first_value("triton_context")


# ------------------------------------------------------------------------------------------ @fill_optionals


def fill_info(batching: bool = True) -> ModelInfo:
    return make_info(
        inputs={"x": (np.float32, (-1,)), "t": (np.float32, (2,)), "s": (bytes, (1,))},
        batching=batching,
    )


def test_fill_optionals_tiles_defaults_per_request_batch_size() -> None:
    seen: list[Request] = []

    @fill_optionals(t=np.array([0.5, 1.5], dtype=np.float32), s=np.array([b"d\x00"], dtype=object))
    def infer(requests: list[Request]) -> list[dict[str, np.ndarray]]:
        seen.extend(requests)
        return [{"y": r["x"]} for r in requests]

    inject_context(infer, fill_info())
    given_t = f32([9, 9])
    original = req({"p": 1}, x=f32([1], [2], [3]))
    infer([original, req(x=f32([4]), t=given_t)])

    assert seen[0]["t"].tolist() == [[0.5, 1.5]] * 3
    assert seen[0]["s"].dtype == object
    assert seen[0]["s"].tolist() == [[b"d\x00"]] * 3
    assert seen[0].parameters == {"p": 1}
    assert "t" not in original
    assert seen[1]["t"] is given_t
    assert seen[1]["s"].shape == (1, 1)


def test_fill_optionals_lets_batch_join_requests() -> None:
    @fill_optionals(t=np.array([1.0, 2.0], dtype=np.float32))
    @batch
    def infer(x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": x * t}

    inject_context(infer, fill_info())
    responses = infer([req(x=f32([1, 1])), req(x=f32([1, 1]), t=f32([3, 4]))])
    assert [r["y"].tolist() for r in responses] == [[[1.0, 2.0]], [[3.0, 4.0]]]


def test_fill_optionals_without_batching_uses_the_default_as_is() -> None:
    seen: list[Request] = []

    @fill_optionals(t=np.array([7.0, 8.0], dtype=np.float32))
    def infer(requests: list[Request]) -> list[dict[str, np.ndarray]]:
        seen.extend(requests)
        return [{} for _ in requests]

    inject_context(infer, fill_info(batching=False))
    infer([req(x=np.array([1.0, 2.0, 3.0], dtype=np.float32))])
    assert seen[0]["t"].tolist() == [7.0, 8.0]


@pytest.mark.parametrize(
    ("defaults", "pattern"),
    [
        (
            {"missing": np.array([1.0], dtype=np.float32)},
            r"no input\(s\) 'missing'; declared inputs are 'x', 't'",
        ),
        ({"t": np.array([1, 2], dtype=np.int64)}, r"input 't' has dtype int64; expected float32"),
        ({"t": np.array([1.0, 2.0, 3.0], dtype=np.float32)}, r"input 't' has shape \(3,\); expected \(2,\)"),
        ({"s": np.array([1.0], dtype=np.float32)}, r"input 's' has dtype float32; expected bytes"),
    ],
)
def test_fill_optionals_validates_defaults(defaults: dict[str, np.ndarray], pattern: str) -> None:
    @fill_optionals(**defaults)
    def infer(requests: list[Request]) -> list[dict[str, np.ndarray]]:
        return [{} for _ in requests]

    inject_context(infer, fill_info())
    with pytest.raises(PyTritonTorchBadParameterError, match=pattern):
        infer([req(x=f32([1]))])


def test_fill_optionals_rejects_non_numpy_defaults_at_decoration() -> None:
    with pytest.raises(
        PyTritonTorchBadParameterError, match="default of 't' is a list; expected a numpy array"
    ):
        fill_optionals(t=[1.0, 2.0])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ @triton_context


def test_triton_context_passes_the_context() -> None:
    received: list[TritonContext] = []

    @triton_context
    @batch
    def infer(x: np.ndarray, triton_context: TritonContext) -> dict[str, np.ndarray]:
        received.append(triton_context)
        return {"y": x}

    info = make_info(max_batch_size=32)
    inject_context(infer, info)
    infer([req(x=f32([1]))])
    assert isinstance(received[0], TritonContext)
    assert received[0].model_configs[infer] is info
    assert received[0].info_for(infer).max_batch_size == 32


def test_triton_context_on_a_method_finds_its_model() -> None:
    class Model:
        @triton_context
        def infer(self, requests: list[Request], triton_context: TritonContext) -> list[dict[str, Any]]:
            name = triton_context.model_configs[self.infer].model_name
            return [{"name": name} for _ in requests]

    model = Model()
    inject_context(model.infer, make_info())
    assert model.infer([req(x=f32([1]))]) == [{"name": "model"}]


def test_unbound_functions_have_no_context() -> None:
    @triton_context
    def infer(requests: list[Request], triton_context: TritonContext) -> list[dict[str, Any]]:
        return []

    with pytest.raises(PyTritonTorchValidationError, match=r"Triton.bind"):
        infer([])
    with pytest.raises(PyTritonTorchValidationError, match=r"Triton.bind"):
        get_model_config(infer)


# ------------------------------------------------------------------------------------------ stacks


def test_full_stack_on_a_method() -> None:
    class Model:
        def __init__(self) -> None:
            self.calls = 0

        @fill_optionals(t=np.array([1.0, 1.0], dtype=np.float32))
        @group_by_keys
        @batch
        @group_by_values("t")
        def infer(self, x: np.ndarray, t: np.ndarray) -> list[np.ndarray]:
            self.calls += 1
            return [x * t]

    model = Model()
    inject_context(model.infer, fill_info())
    responses = model.infer(
        [
            req(x=f32([1, 1])),
            req(x=f32([1, 1], [2, 2]), t=f32([3, 3], [1, 1])),
        ]
    )
    assert model.calls == 2
    assert [r["y"].tolist() for r in responses] == [[[1.0, 1.0]], [[3.0, 3.0], [2.0, 2.0]]]


def test_decorating_a_non_callable_is_a_bad_parameter() -> None:
    with pytest.raises(PyTritonTorchBadParameterError, match="not callable"):
        batch("infer")  # type: ignore[arg-type]
