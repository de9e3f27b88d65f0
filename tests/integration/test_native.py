"""The native backend (Triton(backend="native")): our C backend inside tritonserver, no stub process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from pytriton_torch import ModelConfig, Request, Tensor, Triton
from pytriton_torch.exceptions import PyTritonTorchValidationError
from tests.integration.conftest import children, make_config

F32 = np.float32
VEC = [Tensor(name="x", dtype=F32, shape=(-1,))]


def _two_outputs(requests: list[Request]) -> list[dict[str, Any]]:
    return [{"a": r["x"] + 1, "b": r["x"] * 10} for r in requests]


def _fails(requests: list[Request]) -> list[dict[str, Any]]:
    raise ValueError("this model always fails")


def _slow(requests: list[Request]) -> list[dict[str, Any]]:
    if float(requests[0]["x"].reshape(-1)[0]) > 0:
        time.sleep(3)
    return [{"y": r["x"]} for r in requests]


def _bf16_echo(requests: list[Request]) -> list[dict[str, Any]]:
    return [{"y": r["x"]} for r in requests]


def _params_echo(requests: list[Request]) -> list[dict[str, Any]]:
    return [
        {"y": np.array([[repr(sorted(r.parameters.items())).encode()]] * r["x"].shape[0], dtype=object)}
        for r in requests
    ]


@pytest.fixture(scope="module")
def native() -> Iterator[Triton]:
    with Triton(config=make_config(), backend="native") as server:
        server.bind(
            "two",
            _two_outputs,
            VEC,
            [Tensor(name="a", dtype=F32, shape=(-1,)), Tensor(name="b", dtype=F32, shape=(-1,))],
            config=ModelConfig(max_batch_size=4),
        )
        server.bind(
            "fails",
            _fails,
            VEC,
            [Tensor(name="y", dtype=F32, shape=(-1,))],
            config=ModelConfig(max_batch_size=4),
        )
        server.bind(
            "slow",
            _slow,
            VEC,
            [Tensor(name="y", dtype=F32, shape=(-1,))],
            config=ModelConfig(max_batch_size=4, timeout_s=1.0),
        )
        server.bind(
            "limited",
            _bf16_echo,
            VEC,
            [Tensor(name="y", dtype=F32, shape=(-1,))],
            config=ModelConfig(max_batch_size=4, max_input_bytes=1024),
        )
        server.bind(
            "bf16",
            _bf16_echo,
            [Tensor(name="x", dtype=ml_dtypes.bfloat16, shape=(-1,))],
            [Tensor(name="y", dtype=ml_dtypes.bfloat16, shape=(-1,))],
            config=ModelConfig(max_batch_size=4),
        )
        server.bind(
            "params",
            _params_echo,
            VEC,
            [Tensor(name="y", dtype=bytes, shape=(1,))],
            config=ModelConfig(max_batch_size=4),
        )
        yield server


def _http(triton: Triton) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"), network_timeout=60)


def _grpc(triton: Triton) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(triton.grpc_url.removeprefix("grpc://"))


def _x(values: list[float]) -> httpclient.InferInput:
    array = np.array([values], dtype=F32)
    item = httpclient.InferInput("x", list(array.shape), "FP32")
    item.set_data_from_numpy(array)
    return item


def test_no_python_backend_stub_runs_while_a_native_model_serves(native: Triton) -> None:
    result = _http(native).infer("two", [_x([1, 2])])
    assert result.as_numpy("a").tolist() == [[2, 3]]
    names = [p.name() for p in children()]
    assert "tritonserver" in names
    assert not [n for n in names if "stub" in n], names
    assert _http(native).get_model_config("two")["backend"] == "pytriton_torch"


def test_only_the_requested_outputs_come_back(native: Triton) -> None:
    wanted = [httpclient.InferRequestedOutput("b")]
    result = _http(native).infer("two", [_x([1, 2])], outputs=wanted)
    assert result.as_numpy("b").tolist() == [[10, 20]]
    assert result.as_numpy("a") is None


def test_an_error_names_the_request_id_and_the_model_keeps_serving(native: Triton) -> None:
    with pytest.raises(InferenceServerException, match=r"this model always fails \[request id: abc-17\]"):
        _http(native).infer("fails", [_x([1])], request_id="abc-17")
    assert _http(native).infer("two", [_x([0])]).as_numpy("a").tolist() == [[1]]


def test_timeout_fails_the_request_and_later_ones_are_answered(native: Triton) -> None:
    started = time.monotonic()
    with pytest.raises(InferenceServerException, match="no answer from the infer function within 1s"):
        _http(native).infer("slow", [_x([1])])
    assert time.monotonic() - started < 2.9  # failed at the timeout, not when the call ended
    time.sleep(2.5)  # the late answer arrives meanwhile and is dropped
    assert _http(native).infer("slow", [_x([-1])]).as_numpy("y").tolist() == [[-1]]


def test_an_oversized_input_fails_alone(native: Triton) -> None:
    with pytest.raises(InferenceServerException, match=r"input 'x' has 4096 bytes; the limit is 1024 bytes"):
        _http(native).infer("limited", [_x([0.0] * 1024)])
    assert _http(native).infer("limited", [_x([5])]).as_numpy("y").tolist() == [[5]]


def test_bf16_travels_as_bytes(native: Triton) -> None:
    values = np.array([[1.5, -2.0, 3.25]], dtype=ml_dtypes.bfloat16)
    item = grpcclient.InferInput("x", [1, 3], "BF16")
    item._raw_content = values.tobytes()  # tritonclient's numpy path does not know bfloat16
    result = _grpc(native).infer("bf16", [item])
    raw = result.get_response().raw_output_contents[0]
    assert np.frombuffer(raw, dtype=ml_dtypes.bfloat16).tolist() == values.reshape(-1).tolist()


def test_request_parameters_reach_the_function(native: Triton) -> None:
    item = grpcclient.InferInput("x", [1, 1], "FP32")
    item.set_data_from_numpy(np.ones((1, 1), dtype=F32))
    params = {"scale": 3, "name": 'a "quoted"\nname', "flag": True}
    result = _grpc(native).infer("params", [item], parameters=params)
    text = result.as_numpy("y")[0, 0].decode()
    assert text == repr(sorted(params.items()))


def test_native_needs_the_unix_channel() -> None:
    with pytest.raises(PyTritonTorchValidationError, match="backend='native' speaks the 'unix' channel only"):
        Triton(backend="native", channel="zmq")
    with pytest.raises(PyTritonTorchValidationError, match="backend='cuda' is not supported"):
        Triton(backend="cuda")
