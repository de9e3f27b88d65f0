"""Core serving over a real tritonserver, queried with tritonclient HTTP and gRPC."""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from pytriton_torch import DynamicBatcher, ModelConfig, Request, Tensor, Triton
from tests.integration.conftest import make_config

F32 = np.float32


def _double(requests: list[Request]) -> list[dict[str, Any]]:
    return [{"y": r["x"] * 2} for r in requests]


class BatchRecorder:
    """Infer function that records the batch sizes Triton formed."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, requests: list[Request]) -> list[dict[str, Any]]:
        self.sizes.append(len(requests))
        time.sleep(0.02)  # let requests queue up so the batcher can group them
        return [{"y": r["x"] + 1} for r in requests]


class InstanceRecorder:
    def __init__(self, seen: set[int], index: int) -> None:
        self.seen, self.index = seen, index

    def __call__(self, requests: list[Request]) -> list[dict[str, Any]]:
        self.seen.add(self.index)
        time.sleep(0.2)
        return [{"y": np.full_like(r["x"], self.index)} for r in requests]


RECORDER = BatchRecorder()
INSTANCES_SEEN: set[int] = set()


def _bytes_echo(requests: list[Request]) -> list[dict[str, Any]]:
    return [{"out": r["text"]} for r in requests]


def _optional(requests: list[Request]) -> list[dict[str, Any]]:
    out = []
    for r in requests:
        bias = r["bias"] if "bias" in r else np.zeros_like(r["x"])
        out.append({"y": r["x"] + bias})
    return out


def _params(requests: list[Request]) -> list[dict[str, Any]]:
    out = []
    for r in requests:
        scale = float(r.parameters.get("scale", 1))
        header = r.parameters.get("x-tag", "none")
        out.append(
            {"y": r["x"] * scale, "tag": np.array([[header.encode()]] * r["x"].shape[0], dtype=object)}
        )
    return out


def _fails(requests: list[Request]) -> list[dict[str, Any]]:
    if any(float(r["x"].sum()) < 0 for r in requests):
        raise ValueError("negative input is not allowed here")
    return [{"y": r["x"]} for r in requests]


async def _async_double(requests: list[Request]) -> list[dict[str, Any]]:
    await asyncio.sleep(0)
    return [{"y": r["x"] * 2} for r in requests]


def _stream(requests: list[Request]) -> Any:
    n = int(requests[0]["n"].reshape(-1)[0])
    for i in range(n):
        yield [{"y": np.full((1, 1), i, dtype=np.int32)} for _ in requests]


async def _astream(requests: list[Request]) -> Any:
    n = int(requests[0]["n"].reshape(-1)[0])
    for i in range(n):
        await asyncio.sleep(0)
        yield [{"y": np.full((1, 1), 10 + i, dtype=np.int32)} for _ in requests]


def _wrong_dtype(requests: list[Request]) -> list[dict[str, Any]]:
    return [{"y": np.array([["text"]] * r["x"].shape[0], dtype=object)} for r in requests]


def _missing(requests: list[Request]) -> list[dict[str, Any]]:
    return [{} for _ in requests]


def _wrong_batch(requests: list[Request]) -> list[dict[str, Any]]:
    return [{"y": np.concatenate([r["x"], r["x"]])} for r in requests]


def _f64(requests: list[Request]) -> list[dict[str, Any]]:
    return [{"y": r["x"].astype(np.float64)} for r in requests]


VEC = [Tensor(name="x", dtype=F32, shape=(-1,))]
OUT = [Tensor(name="y", dtype=F32, shape=(-1,))]


@pytest.fixture(scope="module", params=["unix", "zmq", "native"])
def triton(request: pytest.FixtureRequest) -> Iterator[Triton]:
    """The core suite runs once per channel transport, and once on the native backend (unix channel).

    On the native backend, streaming (decoupled) models are still served by the Python backend.
    """
    if request.param == "native":
        with Triton(config=make_config(), backend="native") as server:
            yield server
        return
    with Triton(config=make_config(), channel=request.param) as server:
        yield server


@pytest.fixture(scope="module")
def served(triton: Triton) -> Triton:
    triton.bind("double", _double, VEC, OUT, config=ModelConfig(max_batch_size=8))
    triton.bind(
        "batched",
        RECORDER,
        VEC,
        OUT,
        config=ModelConfig(max_batch_size=16, batcher=DynamicBatcher(max_queue_delay_microseconds=20000)),
    )
    triton.bind(
        "instances",
        [InstanceRecorder(INSTANCES_SEEN, 0), InstanceRecorder(INSTANCES_SEEN, 1)],
        VEC,
        OUT,
        config=ModelConfig(max_batch_size=1),
    )
    triton.bind(
        "bytes_echo",
        _bytes_echo,
        [Tensor(name="text", dtype=bytes, shape=(1,))],
        [Tensor(name="out", dtype=bytes, shape=(1,))],
        config=ModelConfig(max_batch_size=4),
    )
    triton.bind(
        "optional",
        _optional,
        [*VEC, Tensor(name="bias", dtype=F32, shape=(-1,), optional=True)],
        OUT,
        config=ModelConfig(max_batch_size=4),
    )
    triton.bind(
        "params",
        _params,
        VEC,
        [*OUT, Tensor(name="tag", dtype=bytes, shape=(1,))],
        config=ModelConfig(max_batch_size=4),
    )
    triton.bind("fails", _fails, VEC, OUT, config=ModelConfig(max_batch_size=4))
    triton.bind("async_double", _async_double, VEC, OUT, config=ModelConfig(max_batch_size=4))
    triton.bind(
        "nobatch",
        _double,
        [Tensor(name="x", dtype=F32, shape=(2, 3))],
        [Tensor(name="y", dtype=F32, shape=(2, 3))],
        config=ModelConfig(batching=False),
    )
    stream_io = (
        [Tensor(name="n", dtype=np.int32, shape=(1,))],
        [Tensor(name="y", dtype=np.int32, shape=(1,))],
    )
    triton.bind("stream", _stream, *stream_io, config=ModelConfig(max_batch_size=4, decoupled=True))
    triton.bind("astream", _astream, *stream_io, config=ModelConfig(max_batch_size=4, decoupled=True))
    triton.bind("wrong_dtype", _wrong_dtype, VEC, OUT, config=ModelConfig(max_batch_size=4))
    triton.bind("missing", _missing, VEC, OUT, config=ModelConfig(max_batch_size=4))
    triton.bind("wrong_batch", _wrong_batch, VEC, OUT, config=ModelConfig(max_batch_size=4))
    triton.bind("f64_lenient", _f64, VEC, OUT, config=ModelConfig(max_batch_size=4))
    triton.bind("f64_strict", _f64, VEC, OUT, config=ModelConfig(max_batch_size=4), strict=True)
    triton.bind("big", _double, VEC, OUT, config=ModelConfig(max_batch_size=1))
    return triton


def _http(triton: Triton) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(
        triton.http_url.removeprefix("http://"), connection_timeout=120, network_timeout=120
    )


def _grpc(triton: Triton) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(triton.grpc_url.removeprefix("grpc://"))


def _infer_http(triton: Triton, model: str, **arrays: np.ndarray) -> httpclient.InferResult:
    client = _http(triton)
    inputs = []
    for name, array in arrays.items():
        dtype = (
            "BYTES" if array.dtype == object else {np.float32: "FP32", np.int32: "INT32"}[array.dtype.type]
        )
        item = httpclient.InferInput(name, list(array.shape), dtype)
        item.set_data_from_numpy(array, binary_data=True)
        inputs.append(item)
    return client.infer(model, inputs)


def test_http_and_grpc_answer(served: Triton) -> None:
    x = np.arange(6, dtype=F32).reshape(2, 3)
    assert np.array_equal(_infer_http(served, "double", x=x).as_numpy("y"), x * 2)
    client = _grpc(served)
    item = grpcclient.InferInput("x", [2, 3], "FP32")
    item.set_data_from_numpy(x)
    assert np.array_equal(client.infer("double", [item]).as_numpy("y"), x * 2)


def test_model_metadata_and_config(served: Triton, request: pytest.FixtureRequest) -> None:
    client = _http(served)
    assert client.is_model_ready("double")
    config = client.get_model_config("double")
    assert config["max_batch_size"] == 8
    assert [i["name"] for i in config["input"]] == ["x"]
    native = request.node.callspec.params["triton"] == "native"
    assert config["backend"] == ("pytriton_torch" if native else "python")


def test_dynamic_batcher_groups_requests(served: Triton) -> None:
    RECORDER.sizes.clear()
    x = np.ones((1, 4), dtype=F32)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _infer_http(served, "batched", x=x).as_numpy("y"), range(16)))
    assert all(np.array_equal(r, x + 1) for r in results)
    assert sum(RECORDER.sizes) == 16
    assert max(RECORDER.sizes) > 1, RECORDER.sizes


def test_several_instances_run_concurrently(served: Triton) -> None:
    INSTANCES_SEEN.clear()
    x = np.ones((1, 2), dtype=F32)
    start = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: _infer_http(served, "instances", x=x).as_numpy("y"), range(4)))
    elapsed = time.monotonic() - start
    assert {0, 1} == INSTANCES_SEEN
    assert sorted(int(r[0, 0]) for r in results) in ([0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1])
    assert elapsed < 4 * 0.2 + 0.5  # serial would take >= 0.8 s plus overhead


def test_bytes_keep_trailing_nul_bytes(served: Triton) -> None:
    text = np.array([[b"abc\x00\x00"], [b"\x00x\x00"], [b""]], dtype=object)
    out = _infer_http(served, "bytes_echo", text=text).as_numpy("out")
    assert out.tolist() == text.tolist()


def test_optional_input(served: Triton) -> None:
    x = np.ones((1, 3), dtype=F32)
    assert np.array_equal(_infer_http(served, "optional", x=x).as_numpy("y"), x)
    bias = np.full((1, 3), 2, dtype=F32)
    assert np.array_equal(_infer_http(served, "optional", x=x, bias=bias).as_numpy("y"), x + 2)


def test_parameters_reach_the_function(served: Triton) -> None:
    client = _grpc(served)
    item = grpcclient.InferInput("x", [1, 2], "FP32")
    item.set_data_from_numpy(np.ones((1, 2), dtype=F32))
    result = client.infer("params", [item], parameters={"scale": 3})
    assert np.array_equal(result.as_numpy("y"), np.full((1, 2), 3, dtype=F32))
    assert result.as_numpy("tag").tolist() == [[b"none"]]


def test_exception_becomes_error_and_model_keeps_serving(served: Triton) -> None:
    with pytest.raises(InferenceServerException, match="negative input is not allowed here"):
        _infer_http(served, "fails", x=-np.ones((1, 2), dtype=F32))
    ok = _infer_http(served, "fails", x=np.ones((1, 2), dtype=F32)).as_numpy("y")
    assert np.array_equal(ok, np.ones((1, 2), dtype=F32))


def test_async_infer_function(served: Triton) -> None:
    x = np.arange(3, dtype=F32).reshape(1, 3)
    assert np.array_equal(_infer_http(served, "async_double", x=x).as_numpy("y"), x * 2)


def test_model_without_batching(served: Triton) -> None:
    x = np.arange(6, dtype=F32).reshape(2, 3)
    assert np.array_equal(_infer_http(served, "nobatch", x=x).as_numpy("y"), x * 2)


@pytest.mark.parametrize(("model", "first"), [("stream", 0), ("astream", 10)])
def test_streaming_generator_over_grpc(served: Triton, model: str, first: int) -> None:
    results: queue.Queue[Any] = queue.Queue()
    client = _grpc(served)
    client.start_stream(callback=lambda result, error: results.put(error or result))
    item = grpcclient.InferInput("n", [1, 1], "INT32")
    item.set_data_from_numpy(np.array([[4]], dtype=np.int32))
    client.async_stream_infer(model, [item], enable_empty_final_response=True)
    values = []
    while True:
        got = results.get(timeout=30)
        assert not isinstance(got, InferenceServerException), got
        if got.get_response().parameters["triton_final_response"].bool_param:
            break
        values.append(int(got.as_numpy("y")[0, 0]))
    client.stop_stream()
    assert values == [first, first + 1, first + 2, first + 3]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("wrong_dtype", "output 'y' has dtype object (BYTES); expected float32 (FP32)"),
        ("missing", "did not return output(s) y"),
        ("wrong_batch", "output 'y' has batch size 2; expected batch size 1"),
        ("f64_strict", "output 'y' has dtype float64 (FP64); expected float32 (FP32)"),
    ],
)
def test_bad_outputs_are_reported_with_the_output_name(served: Triton, model: str, message: str) -> None:
    with pytest.raises(InferenceServerException, match=message.replace("(", r"\(").replace(")", r"\)")):
        _infer_http(served, model, x=np.ones((1, 2), dtype=F32))
    # the model keeps serving: the same error again, not a hang or a crash
    with pytest.raises(InferenceServerException):
        _infer_http(served, model, x=np.ones((1, 2), dtype=F32))


def test_lenient_mode_converts_dtype(served: Triton) -> None:
    y = _infer_http(served, "f64_lenient", x=np.ones((1, 2), dtype=F32)).as_numpy("y")
    assert y.dtype == np.float32 and np.array_equal(y, np.ones((1, 2), dtype=F32))


def test_tensor_larger_than_64_mb_and_shm_growth(served: Triton) -> None:
    for n in (1_000, 100_000, 4_000_000, 20_000_000):  # 4 KB .. 80 MB: inline, then growing shm
        x = np.random.default_rng(n).random((1, n), dtype=F32)
        y = _infer_http(served, "big", x=x).as_numpy("y")
        assert np.array_equal(y, x * 2), n
