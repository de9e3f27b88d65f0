"""Bad input, per-model timeout and input size limit against a real server.

Every case checks three things: the client gets an error that names the model, the input (where
there is one) and what was expected; the server keeps serving; the next valid request succeeds.
Bad *outputs* of an infer function and a raising infer function are covered in test_core.py.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from pytriton_torch import ModelConfig, Request, Tensor, Triton
from pytriton_torch.exceptions import PyTritonTorchValidationError
from tests.integration.conftest import make_config

F32 = np.float32
VEC_IN = [Tensor(name="x", dtype=F32, shape=(-1,))]
VEC_OUT = [Tensor(name="y", dtype=F32, shape=(-1,))]
LIMIT = 4096


def _double(requests: list[Request]) -> list[dict[str, Any]]:
    return [{"y": r["x"] * 2} for r in requests]


def _add(requests: list[Request]) -> list[dict[str, Any]]:
    return [{"y": r["a"] + r["b"]} for r in requests]


def _length(requests: list[Request]) -> list[dict[str, Any]]:
    out = []
    for r in requests:
        size = r["x"].shape[-1] if "x" in r else len(r["text"].reshape(-1)[0])
        out.append({"n": np.full((1, 1), size, dtype=np.int64)})
    return out


class Blocking:
    """Infer function that blocks on ``release`` when asked to (input < 0), then answers -1."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.finished = threading.Event()
        self.calls = 0

    def __call__(self, requests: list[Request]) -> list[dict[str, Any]]:
        self.calls += 1
        if any(float(r["x"].reshape(-1)[0]) < 0 for r in requests):
            self.release.wait(60)
            self.finished.set()
            return [{"y": np.full_like(r["x"], -1)} for r in requests]
        return [{"y": r["x"] * 2} for r in requests]


BLOCKING = Blocking()
STREAM_GATE = threading.Event()


def _stream(requests: list[Request]) -> Iterator[list[dict[str, Any]]]:
    n = int(requests[0]["n"].reshape(-1)[0])
    if n < 0:  # stuck before its first chunk, then produces two late ones
        STREAM_GATE.wait(60)
        n = 2
    for i in range(n):
        yield [{"y": np.full((1, 1), i, dtype=np.int32)} for _ in requests]


@pytest.fixture(scope="module")
def triton() -> Iterator[Triton]:
    with Triton(config=make_config()) as server:
        server.bind("double", _double, VEC_IN, VEC_OUT, config=ModelConfig(max_batch_size=4))
        server.bind(
            "fixed",
            _double,
            [Tensor(name="x", dtype=F32, shape=(3,))],
            [Tensor(name="y", dtype=F32, shape=(3,))],
            config=ModelConfig(max_batch_size=4),
        )
        server.bind(
            "add",
            _add,
            [Tensor(name="a", dtype=F32, shape=(-1,)), Tensor(name="b", dtype=F32, shape=(-1,))],
            VEC_OUT,
            config=ModelConfig(max_batch_size=4),
        )
        server.bind(
            "limited",
            _length,
            [
                Tensor(name="x", dtype=F32, shape=(-1,), optional=True),
                Tensor(name="text", dtype=bytes, shape=(1,), optional=True),
            ],
            [Tensor(name="n", dtype=np.int64, shape=(1,))],
            config=ModelConfig(max_batch_size=8, max_input_bytes=LIMIT),
        )
        server.bind(
            "slow", BLOCKING, VEC_IN, VEC_OUT, config=ModelConfig(max_batch_size=4, timeout_s=0.5)
        )
        server.bind(
            "slow_stream",
            _stream,
            [Tensor(name="n", dtype=np.int32, shape=(1,))],
            [Tensor(name="y", dtype=np.int32, shape=(1,))],
            config=ModelConfig(max_batch_size=1, decoupled=True, timeout_s=0.5),
        )
        yield server


def _http(triton: Triton) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"), network_timeout=60)


def _grpc(triton: Triton) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(triton.grpc_url.removeprefix("grpc://"))


def _infer(triton: Triton, protocol: str, model: str, inputs: dict[str, tuple[str, np.ndarray]]) -> Any:
    """Send ``inputs`` (name -> (Triton datatype, array)) over ``protocol``; returns the result."""
    module: Any = httpclient if protocol == "http" else grpcclient
    client = _http(triton) if protocol == "http" else _grpc(triton)
    items = []
    for name, (datatype, array) in inputs.items():
        item = module.InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array)
        items.append(item)
    return client.infer(model, items)


def _ok(triton: Triton, protocol: str) -> None:
    """The server still answers a valid request correctly."""
    x = np.arange(6, dtype=F32).reshape(2, 3)
    assert np.array_equal(_infer(triton, protocol, "double", {"x": ("FP32", x)}).as_numpy("y"), x * 2)


BAD_INPUTS: dict[str, tuple[str, dict[str, tuple[str, np.ndarray]], str]] = {
    "wrong dtype": (
        "double",
        {"x": ("INT32", np.ones((1, 3), dtype=np.int32))},
        "input 'x' data-type is 'INT32', but model 'double' expects 'FP32'",
    ),
    "wrong rank": (
        "fixed",
        {"x": ("FP32", np.ones((1, 3, 2), dtype=F32))},
        "unexpected shape for input 'x' for model 'fixed'. Expected [-1,3], got [1,3,2]",
    ),
    "wrong shape": (
        "fixed",
        {"x": ("FP32", np.ones((1, 4), dtype=F32))},
        "unexpected shape for input 'x' for model 'fixed'. Expected [-1,3], got [1,4]",
    ),
    "missing input": (
        "add",
        {"a": ("FP32", np.ones((1, 3), dtype=F32))},
        "expected 2 inputs but got 1 inputs for model 'add'. Got input(s) ['a'], "
        "but missing required input(s) ['b']",
    ),
    "unknown input": (
        "double",
        {"z": ("FP32", np.ones((1, 3), dtype=F32))},
        "unexpected inference input 'z' for model 'double'",
    ),
    "batch above max_batch_size": (
        "double",
        {"x": ("FP32", np.ones((5, 3), dtype=F32))},
        "inference request batch-size must be <= 4 for 'double'",
    ),
    "empty batch": (
        "double",
        {"x": ("FP32", np.ones((0, 3), dtype=F32))},
        "input byte size mismatch for input 'x' for model 'double'",
    ),
    "BYTES to a numeric input": (
        "double",
        {"x": ("BYTES", np.array([[b"1.0"]], dtype=object))},
        "input 'x' data-type is 'BYTES', but model 'double' expects 'FP32'",
    ),
    "numeric tensor above max_input_bytes": (
        "limited",
        {"x": ("FP32", np.ones((1, LIMIT // 4 + 1), dtype=F32))},
        f"model 'limited': input 'x' has {LIMIT + 4} bytes; the limit is {LIMIT} bytes "
        "(ModelConfig.max_input_bytes)",
    ),
    "BYTES tensor above max_input_bytes": (
        "limited",
        {"text": ("BYTES", np.array([[b"a" * LIMIT]], dtype=object))},
        f"model 'limited': input 'text' has {LIMIT + 4} bytes; the limit is {LIMIT} bytes",
    ),
}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_with_a_clear_error(triton: Triton, protocol: str, case: str) -> None:
    model, inputs, message = BAD_INPUTS[case]
    with pytest.raises(InferenceServerException, match=re.escape(message)):
        _infer(triton, protocol, model, inputs)
    _ok(triton, protocol)
    assert _http(triton).is_server_live()


def test_input_size_limit_accepts_inputs_up_to_the_limit(triton: Triton) -> None:
    x = np.ones((1, LIMIT // 4), dtype=F32)
    assert _infer(triton, "http", "limited", {"x": ("FP32", x)}).as_numpy("n").tolist() == [[LIMIT // 4]]
    text = np.array([[b"a" * (LIMIT - 4)]], dtype=object)
    assert _infer(triton, "grpc", "limited", {"text": ("BYTES", text)}).as_numpy("n").tolist() == [[LIMIT - 4]]


def test_oversized_request_fails_alone_in_a_batch(triton: Triton) -> None:
    """Requests batched with an oversized one are still answered."""

    def send(i: int) -> Any:
        size = LIMIT if i % 2 else LIMIT // 4  # odd ones are 4x over the limit
        try:
            return int(_infer(triton, "http", "limited", {"x": ("FP32", np.ones((1, size), F32))}).as_numpy("n")[0, 0])
        except InferenceServerException as exc:
            return str(exc)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(16)))
    for i, result in enumerate(results):
        if i % 2:
            assert isinstance(result, str) and "input 'x' has 16384 bytes; the limit is 4096" in result
        else:
            assert result == LIMIT // 4


def test_limits_are_validated() -> None:
    with pytest.raises(PyTritonTorchValidationError, match="max_input_bytes must be >= 1"):
        ModelConfig(max_input_bytes=0)
    with pytest.raises(PyTritonTorchValidationError, match="timeout_s must be > 0"):
        ModelConfig(timeout_s=-1)


def _post(triton: Triton, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        triton.http_url + path, data=body, method="POST", headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


_HEADER = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12}}]}
).encode()


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (b'{"inputs": [', {}, "failed to parse the request JSON buffer"),
        (b"\xff\xfe not json", {}, "failed to parse the request JSON buffer"),
        (b'{"inputs": 7}', {}, "Unable to parse 'inputs'"),
        (
            b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2]}]}',
            {},
            "Shape does not match true shape of 'data' field",
        ),
        (
            _HEADER + b"\0" * 6,
            {"Inference-Header-Content-Length": str(len(_HEADER))},
            "unexpected size for input 'x', expecting 6 additional bytes for model 'double'",
        ),
        (
            _HEADER[:10],
            {"Inference-Header-Content-Length": str(len(_HEADER))},
            f"inference header size should be in range (0, 10), got: {len(_HEADER)}",
        ),
    ],
    ids=["truncated-json", "not-json", "inputs-not-a-list", "data-shape-mismatch", "truncated-binary", "short-header"],
)
def test_malformed_http_bodies_get_json_errors(
    triton: Triton, body: bytes, headers: dict[str, str], message: str
) -> None:
    status, answer = _post(triton, "/v2/models/double/infer", body, headers)
    # Triton answers 400 for bad content and 500 for a body its JSON parser rejects.
    assert status in (400, 500), (status, answer)
    assert message in answer["error"]
    _ok(triton, "http")


def _expect_timeout(triton: Triton, protocol: str) -> None:
    with pytest.raises(
        InferenceServerException,
        match=re.escape("model 'slow': no answer from the infer function within 0.5s"),
    ):
        _infer(triton, protocol, "slow", {"x": ("FP32", -np.ones((1, 2), dtype=F32))})


def test_infer_timeout_fails_the_request_and_the_instance_recovers(triton: Triton) -> None:
    BLOCKING.release.clear()
    BLOCKING.finished.clear()
    try:
        _expect_timeout(triton, "http")
        # While the function is stuck, other models serve, and requests to the stuck instance fail
        # at the limit instead of waiting forever.
        _ok(triton, "grpc")
        _expect_timeout(triton, "grpc")
    finally:
        BLOCKING.release.set()
    assert BLOCKING.finished.wait(30)
    # The late answers (-1) are dropped by call id: the next request gets its own answer.
    x = np.arange(4, dtype=F32).reshape(1, 4)
    for protocol in ("http", "grpc"):
        assert np.array_equal(_infer(triton, protocol, "slow", {"x": ("FP32", x)}).as_numpy("y"), x * 2)


def test_a_stuck_call_is_abandoned_and_the_instance_served_by_a_new_thread(triton: Triton) -> None:
    """A call that never returns cannot be interrupted; a new thread takes over the instance."""
    BLOCKING.release.clear()
    BLOCKING.finished.clear()
    x = np.arange(4, dtype=F32).reshape(1, 4)
    try:
        _expect_timeout(triton, "http")
        # The worker replaces the stuck thread once the call has run 1 s past the limit.
        deadline = time.monotonic() + 10
        while True:
            try:
                answer = _infer(triton, "http", "slow", {"x": ("FP32", x)}).as_numpy("y")
                break
            except InferenceServerException as exc:
                assert "no answer from the infer function within 0.5s" in str(exc)
                assert time.monotonic() < deadline, "the stuck instance was not replaced"
        assert np.array_equal(answer, x * 2)
        assert not BLOCKING.finished.is_set()  # the stuck call is still running
    finally:
        BLOCKING.release.set()
    assert BLOCKING.finished.wait(30)
    # Its late answer is dropped: the instance keeps answering its own requests.
    assert np.array_equal(_infer(triton, "grpc", "slow", {"x": ("FP32", x)}).as_numpy("y"), x * 2)


def test_fast_calls_are_not_affected_by_the_timeout(triton: Triton) -> None:
    BLOCKING.release.set()
    send: Callable[[int], Any] = lambda i: _infer(  # noqa: E731
        triton, "http", "slow", {"x": ("FP32", np.full((1, 3), i, dtype=F32))}
    ).as_numpy("y")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(send, range(20)))
    assert all(np.array_equal(r, np.full((1, 3), 2 * i, dtype=F32)) for i, r in enumerate(results))


def _stream_values(triton: Triton, n: int) -> list[Any]:
    """Values of one gRPC stream, or the error message it ended with."""
    results: queue.Queue[Any] = queue.Queue()
    client = _grpc(triton)
    client.start_stream(callback=lambda result, error: results.put(error or result))
    item = grpcclient.InferInput("n", [1, 1], "INT32")
    item.set_data_from_numpy(np.array([[n]], dtype=np.int32))
    client.async_stream_infer("slow_stream", [item], enable_empty_final_response=True)
    values: list[Any] = []
    try:
        while True:
            got = results.get(timeout=30)
            if isinstance(got, InferenceServerException):
                return [*values, str(got)]
            if got.get_response().parameters["triton_final_response"].bool_param:
                return values
            values.append(int(got.as_numpy("y")[0, 0]))
    finally:
        client.stop_stream()


def test_streaming_timeout_fails_the_stream_and_the_instance_recovers(triton: Triton) -> None:
    STREAM_GATE.clear()
    try:
        values = _stream_values(triton, -1)
        assert len(values) == 1 and "model 'slow_stream': no answer from the infer function within 0.5s" in values[0]
    finally:
        STREAM_GATE.set()
    # The abandoned stream's late chunks are dropped; the next streams get exactly their own.
    for _ in range(3):
        assert _stream_values(triton, 3) == [0, 1, 2]
