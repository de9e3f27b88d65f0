"""An infer function that raises a BaseException (SystemExit, KeyboardInterrupt...) fails one call.

The call that raised gets a clear error, the error is logged, the instance keeps serving (the
next call on it succeeds), and ``stop()`` does not raise. Checked over HTTP and gRPC, for sync
and async functions, and for a streaming generator.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from pytriton_torch import ModelConfig, Request, Tensor, Triton
from tests.integration.conftest import make_config

F32 = np.float32
IO = ([Tensor(name="x", dtype=F32, shape=(-1,))], [Tensor(name="y", dtype=F32, shape=(-1,))])
STREAM_IO = ([Tensor(name="n", dtype=np.int32, shape=(1,))], [Tensor(name="y", dtype=np.int32, shape=(1,))])

RAISES: dict[str, type[BaseException]] = {"exit": SystemExit, "interrupt": KeyboardInterrupt}


def _raise_if_negative(requests: list[Request], kind: type[BaseException]) -> None:
    if any(float(r["x"].reshape(-1)[0]) < 0 for r in requests):
        raise kind("asked to")


def _sync(kind: type[BaseException]) -> Any:
    def infer(requests: list[Request]) -> list[dict[str, Any]]:
        _raise_if_negative(requests, kind)
        return [{"y": r["x"] * 2} for r in requests]

    return infer


async def _async_exit(requests: list[Request]) -> list[dict[str, Any]]:
    _raise_if_negative(requests, SystemExit)
    return [{"y": r["x"] * 2} for r in requests]


def _stream(requests: list[Request]) -> Iterator[list[dict[str, Any]]]:
    n = int(requests[0]["n"].reshape(-1)[0])
    yield [{"y": np.full((1, 1), 0, dtype=np.int32)}]
    if n < 0:
        raise SystemExit("asked to")
    for i in range(1, n):
        yield [{"y": np.full((1, 1), i, dtype=np.int32)}]


async def _astream(requests: list[Request]) -> AsyncIterator[list[dict[str, Any]]]:
    for chunk in _stream(requests):
        yield chunk


@pytest.fixture(scope="module")
def server() -> Iterator[Triton]:
    triton = Triton(config=make_config())
    triton.run()
    try:
        for name, kind in RAISES.items():
            triton.bind(name, _sync(kind), *IO, config=ModelConfig(max_batch_size=4))
        triton.bind("async_exit", _async_exit, *IO, config=ModelConfig(max_batch_size=4))
        triton.bind("stream_exit", _stream, *STREAM_IO, config=ModelConfig(max_batch_size=1, decoupled=True))
        triton.bind(
            "astream_exit", _astream, *STREAM_IO, config=ModelConfig(max_batch_size=1, decoupled=True)
        )
        yield triton
    finally:
        assert triton.stop() is True  # raised OSError (bad file descriptor) before the fix


def _call(server: Triton, protocol: str, model: str, value: float) -> Any:
    x = np.full((1, 3), value, dtype=F32)
    if protocol == "http":
        client: Any = httpclient.InferenceServerClient(
            server.http_url.removeprefix("http://"), network_timeout=30
        )
        item: Any = httpclient.InferInput("x", [1, 3], "FP32")
    else:
        client = grpcclient.InferenceServerClient(server.grpc_url.removeprefix("grpc://"))
        item = grpcclient.InferInput("x", [1, 3], "FP32")
    item.set_data_from_numpy(x)
    try:
        return (
            client.infer(model, [item], client_timeout=30)
            if protocol == "grpc"
            else client.infer(model, [item])
        )
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize(
    ("model", "name"),
    [("exit", "SystemExit"), ("interrupt", "KeyboardInterrupt"), ("async_exit", "SystemExit")],
)
def test_base_exception_fails_the_call_alone(
    server: Triton, protocol: str, model: str, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="pytriton_torch"):
        for _ in range(2):  # the second failure proves the first left the instance serving
            with pytest.raises(InferenceServerException) as info:
                _call(server, protocol, model, -1.0)
            assert f"{name}: asked to" in str(info.value)
            assert "only this call failed" in str(info.value)
            result = _call(server, protocol, model, 1.5)
            assert np.array_equal(result.as_numpy("y"), np.full((1, 3), 3.0, dtype=F32))
    logged = [r for r in caplog.records if r.name == "pytriton_torch.worker" and name in r.getMessage()]
    assert logged and repr(model) in logged[0].getMessage()
    assert server.is_alive()


def _stream_values(server: Triton, model: str, n: int) -> list[Any]:
    results: queue.Queue[Any] = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url.removeprefix("grpc://"))
    client.start_stream(callback=lambda result, error: results.put(error or result))
    item = grpcclient.InferInput("n", [1, 1], "INT32")
    item.set_data_from_numpy(np.array([[n]], dtype=np.int32))
    client.async_stream_infer(model, [item], enable_empty_final_response=True)
    values: list[Any] = []
    try:
        while True:
            got = results.get(timeout=30)
            if isinstance(got, InferenceServerException):
                values.append(str(got))
                return values
            if got.get_response().parameters["triton_final_response"].bool_param:
                return values
            values.append(int(got.as_numpy("y")[0, 0]))
    finally:
        client.stop_stream()
        client.close()


@pytest.mark.parametrize("model", ["stream_exit", "astream_exit"])
def test_base_exception_in_a_generator_fails_the_stream_alone(server: Triton, model: str) -> None:
    for _ in range(2):
        values = _stream_values(server, model, -1)
        assert values[0] == 0 and len(values) == 2, values
        assert "SystemExit: asked to" in values[1]
        assert _stream_values(server, model, 3) == [0, 1, 2]
