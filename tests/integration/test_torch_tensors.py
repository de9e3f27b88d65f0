"""The torch-tensor opt-in (bind(..., tensors="torch")), BF16 on the wire and torch error handling."""

from __future__ import annotations

import threading
import time
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from pytriton_torch import DynamicBatcher, ModelConfig, Tensor, Triton
from pytriton_torch.decorators import batch, first_value, group_by_values
from pytriton_torch.exceptions import PyTritonTorchServerError, PyTritonTorchValidationError
from tests.integration.conftest import make_config

F32 = np.float32
BF16 = ml_dtypes.bfloat16
SEEN: dict[str, Any] = {}


def _in_shared_memory(tensor: torch.Tensor) -> bool:
    """Whether a tensor's data lies in one of this process's /dev/shm mappings (a view, not a copy)."""
    address = tensor.data_ptr()
    with open("/proc/self/maps") as maps:
        for line in maps:
            if "/dev/shm/ptt-" not in line:
                continue
            start, end = (int(part, 16) for part in line.split()[0].split("-"))
            if start <= address < end:
                return True
    return False


@batch
def scale(x: torch.Tensor) -> dict[str, torch.Tensor]:
    SEEN["type"] = type(x)
    SEEN["rows"] = int(x.shape[0])
    SEEN["in_shm"] = _in_shared_memory(x)
    return {"y": x * 2}


@batch
@first_value("factor")
def scale_by(x: torch.Tensor, factor: torch.Tensor) -> dict[str, torch.Tensor]:
    SEEN["factor"] = factor
    return {"y": x * factor}


@batch
@group_by_values("mode")
def by_mode(x: torch.Tensor, mode: torch.Tensor) -> dict[str, torch.Tensor]:
    sign = 1.0 if int(mode[0, 0]) == 0 else -1.0
    return {"y": x * sign}


@batch
def bf16_torch(x: torch.Tensor) -> dict[str, torch.Tensor]:
    SEEN["bf16_dtype"] = x.dtype
    return {"y": x * 2}


@batch
def bf16_numpy(x: np.ndarray) -> dict[str, np.ndarray]:
    SEEN["bf16_numpy_dtype"] = x.dtype
    return {"y": x.astype(F32) + 1}  # float32 is rounded to the BF16 output


@batch
def oom(x: torch.Tensor) -> dict[str, torch.Tensor]:
    if float(x.sum()) > 100:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    return {"y": x}


def stream_tokens(requests: list[Any]) -> Any:
    count = int(requests[0]["n"][0, 0])
    for step in range(count):
        yield [{"token": torch.full((1, 1), step, dtype=torch.int32)}]


VEC = [Tensor(name="x", dtype=F32, shape=(-1,))]
OUT = [Tensor(name="y", dtype=F32, shape=(-1,))]


@pytest.fixture(scope="module")
def served(triton: Triton) -> Triton:
    config = ModelConfig(max_batch_size=64, batcher=DynamicBatcher(max_queue_delay_microseconds=20000))
    triton.bind("scale", scale, VEC, OUT, config=config, tensors="torch")
    triton.bind(
        "scale_by",
        scale_by,
        [*VEC, Tensor(name="factor", dtype=F32, shape=(1,))],
        OUT,
        config=config,
        tensors="torch",
        device="cpu",
    )
    triton.bind(
        "by_mode", by_mode, [*VEC, Tensor(name="mode", dtype=np.int32, shape=(1,))], OUT, tensors="torch"
    )
    bf16 = [Tensor(name="x", dtype=torch.bfloat16, shape=(-1,))]
    triton.bind("bf16_torch", bf16_torch, bf16, [Tensor(name="y", dtype="BF16", shape=(-1,))], tensors="torch")
    triton.bind("bf16_numpy", bf16_numpy, bf16, [Tensor(name="y", dtype=BF16, shape=(-1,))])
    triton.bind("oom", oom, VEC, OUT, tensors="torch")
    triton.bind(
        "stream",
        stream_tokens,
        [Tensor(name="n", dtype=np.int32, shape=(1,))],
        [Tensor(name="token", dtype=np.int32, shape=(1,))],
        config=ModelConfig(max_batch_size=1),
        tensors="torch",
    )
    return triton


def _http(triton: Triton) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"), concurrency=8)


def _infer(client: Any, model: str, datatype: str = "FP32", **arrays: np.ndarray) -> Any:
    inputs = []
    for name, array in arrays.items():
        item = httpclient.InferInput(name, list(array.shape), "INT32" if array.dtype == np.int32 else datatype)
        item.set_data_from_numpy(array)
        inputs.append(item)
    return client.infer(model, inputs)


def test_batch_function_gets_torch_tensors_viewing_shared_memory(served: Triton) -> None:
    client = _http(served)
    x = np.arange(40000, dtype=F32).reshape(1, -1)  # 160 kB: travels in shared memory
    result = _infer(client, "scale", x=x)
    np.testing.assert_array_equal(result.as_numpy("y"), x * 2)
    assert SEEN["type"] is torch.Tensor
    assert SEEN["in_shm"]  # torch.from_numpy on the segment: no copy


def test_concurrent_requests_are_batched_with_torch_cat(served: Triton) -> None:
    client = _http(served)
    xs = [np.full((1, 3), i, dtype=F32) for i in range(8)]
    inputs = []
    for x in xs:
        item = httpclient.InferInput("x", [1, 3], "FP32")
        item.set_data_from_numpy(x)
        inputs.append(item)
    pending = [client.async_infer("scale", [item]) for item in inputs]
    results = [p.get_result().as_numpy("y") for p in pending]
    for x, y in zip(xs, results, strict=True):
        np.testing.assert_array_equal(y, x * 2)


def test_first_value_and_group_by_values_with_torch_tensors(served: Triton) -> None:
    client = _http(served)
    x = np.ones((2, 3), dtype=F32)
    result = _infer(client, "scale_by", x=x, factor=np.full((2, 1), 3, dtype=F32))
    np.testing.assert_array_equal(result.as_numpy("y"), x * 3)
    assert isinstance(SEEN["factor"], torch.Tensor) and SEEN["factor"].dim() == 0
    with pytest.raises(InferenceServerException, match="rows of input 'factor' are not all equal"):
        _infer(client, "scale_by", x=x, factor=np.array([[1], [2]], dtype=F32))
    mixed = _infer(client, "by_mode", x=x, mode=np.array([[0], [1]], dtype=np.int32))
    np.testing.assert_array_equal(mixed.as_numpy("y"), [[1, 1, 1], [-1, -1, -1]])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bf16_round_trip_torch(served: Triton, protocol: str) -> None:
    x = np.array([[1.5, -2.0, 3.0078125]], dtype=BF16)
    if protocol == "http":
        client: Any = _http(served)
        item: Any = httpclient.InferInput("x", [1, 3], "BF16")
    else:
        client = grpcclient.InferenceServerClient(served.grpc_url.removeprefix("grpc://"))
        item = grpcclient.InferInput("x", [1, 3], "BF16")
    item.set_data_from_numpy(x)
    result = client.infer("bf16_torch", [item])
    y = result.as_numpy("y")
    assert y.dtype == np.dtype(BF16)
    np.testing.assert_array_equal(y.astype(F32), x.astype(F32) * 2)
    assert SEEN["bf16_dtype"] == torch.bfloat16
    metadata = client.get_model_metadata("bf16_torch")
    datatype = metadata["outputs"][0]["datatype"] if protocol == "http" else metadata.outputs[0].datatype
    assert datatype == "BF16"


def test_bf16_numpy_function_sees_ml_dtypes_and_may_return_float32(served: Triton) -> None:
    client = _http(served)
    item = httpclient.InferInput("x", [1, 2], "BF16")
    item.set_data_from_numpy(np.array([[0.5, 100.0]], dtype=BF16))
    y = client.infer("bf16_numpy", [item]).as_numpy("y")
    assert SEEN["bf16_numpy_dtype"] == np.dtype(BF16)
    np.testing.assert_array_equal(y.astype(F32), [[1.5, 101.0]])


def test_out_of_memory_fails_the_batch_and_the_model_keeps_serving(served: Triton) -> None:
    client = _http(served)
    with pytest.raises(InferenceServerException, match=r"model 'oom': out of memory on cpu for a batch of 1"):
        _infer(client, "oom", x=np.full((1, 200), 1, dtype=F32))
    ok = _infer(client, "oom", x=np.ones((1, 3), dtype=F32))
    np.testing.assert_array_equal(ok.as_numpy("y"), np.ones((1, 3), dtype=F32))
    assert served.is_alive()


def test_streaming_generator_yields_torch_tensors(served: Triton) -> None:
    client = grpcclient.InferenceServerClient(served.grpc_url.removeprefix("grpc://"))
    tokens: list[int] = []
    done = threading.Event()

    def callback(result: Any, error: Any) -> None:
        if error is not None:
            tokens.append(-1)
            done.set()
            return
        if result.get_response().parameters.get("triton_final_response", None) and result.as_numpy("token") is None:
            done.set()
            return
        tokens.append(int(result.as_numpy("token")[0, 0]))
        if len(tokens) == 4:
            done.set()

    client.start_stream(callback=callback)
    item = grpcclient.InferInput("n", [1, 1], "INT32")
    item.set_data_from_numpy(np.array([[4]], dtype=np.int32))
    client.async_stream_infer("stream", [item])
    assert done.wait(30)
    client.stop_stream()
    assert tokens == [0, 1, 2, 3]


def test_bind_rejects_bad_tensor_options() -> None:
    triton = Triton(config=make_config())
    with pytest.raises(PyTritonTorchValidationError, match="tensors='jax' is not supported"):
        triton.bind("m", scale, VEC, OUT, tensors="jax")
    with pytest.raises(PyTritonTorchValidationError, match="device='cpu' needs tensors='torch'"):
        triton.bind("m", scale, VEC, OUT, device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(PyTritonTorchValidationError, match="CUDA is not available"):
            triton.bind("m", scale, VEC, OUT, tensors="torch", device="cuda:0")


def test_fatal_cuda_error_stops_the_server_with_a_restart_message() -> None:
    """A CUDA error that poisons the context fails its request, then the server goes down.

    The error is raised by hand (no GPU here); tests/gpu/ triggers a real device-side assert.
    """

    @batch
    def broken(x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise RuntimeError("CUDA error: device-side assert triggered\\nCompile with TORCH_USE_CUDA_DSA")

    triton = Triton(config=make_config())
    triton.bind("broken", broken, VEC, OUT, tensors="torch")
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            triton.serve()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        client = _http(triton)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if client.is_model_ready("broken"):
                    break
            except (InferenceServerException, ConnectionError, OSError):
                pass
            time.sleep(0.2)
        with pytest.raises(InferenceServerException, match=r"CUDA error on cpu.*restart the process"):
            _infer(client, "broken", x=np.ones((1, 2), dtype=F32))
        thread.join(60)
        assert not thread.is_alive()
        assert failure and isinstance(failure[0], PyTritonTorchServerError)
        assert "restart" in str(failure[0])
        assert not triton.is_alive()
    finally:
        triton.stop()
        thread.join(10)
