"""The native backend (Triton(backend="native")): our C backend inside tritonserver, no stub process."""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ml_dtypes
import msgpack
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from pytriton_torch import ModelConfig, Request, Tensor, Triton
from pytriton_torch.exceptions import PyTritonTorchValidationError
from tests.conftest import free_port
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


OWNER_SCRIPT = textwrap.dedent(
    """
    import pathlib, time
    import numpy as np
    from pytriton_torch import ModelConfig, Tensor, Triton, TritonConfig

    def stuck(requests):
        pathlib.Path({marker!r}).touch()
        time.sleep(600)

    config = TritonConfig(http_port={http}, grpc_port={grpc}, metrics_port={metrics}, exit_timeout_secs=120)
    with Triton(config=config, backend="native") as triton:
        triton.bind("stuck", stuck, [Tensor(name="x", dtype=np.float32, shape=(-1,))],
                    [Tensor(name="y", dtype=np.float32, shape=(-1,))], config=ModelConfig(max_batch_size=2))
        print("READY", flush=True)
        triton.serve()
    """
)


def test_killed_owner_fails_the_request_in_flight_and_the_server_exits(tmp_path: pathlib.Path) -> None:
    http = free_port()
    marker = tmp_path / "entered"
    script = tmp_path / "server.py"
    script.write_text(
        OWNER_SCRIPT.format(marker=str(marker), http=http, grpc=free_port(), metrics=free_port())
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY"), (line, proc.stderr.read() if proc.stderr else "")
        server = next(
            p for p in psutil.Process(proc.pid).children(recursive=True) if p.name() == "tritonserver"
        )
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http}", network_timeout=300)
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(client.infer, "stuck", [_x([1])])
            deadline = time.monotonic() + 60
            while not marker.exists():
                assert time.monotonic() < deadline
                time.sleep(0.02)
            started = time.monotonic()
            proc.kill()
            # The backend sees the worker's socket close (and the owner pid gone): the request
            # fails at once, not after the infer function's 600 s or exit_timeout_secs.
            failure = in_flight.exception(timeout=60)
        assert isinstance(failure, InferenceServerException), failure
        assert "has exited" in str(failure) or "closed its connection" in str(failure), failure
        assert time.monotonic() - started < 30
        client.close()  # tritonserver's shutdown waits for open HTTP connections
        server.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


# -- a hostile worker: the infer function writes its own messages into the channel --------------------


def _message(header: object, *frames: bytes) -> bytes:
    parts = [msgpack.packb(header, use_bin_type=True), *frames]
    return struct.pack(f"<I{len(parts)}Q", len(parts), *map(len, parts)) + b"".join(parts)


def _ok(call_id: int, tensor: list[object], *frames: bytes, seg: str = "") -> bytes:
    return _message({"t": "ok", "id": call_id, "resps": [[tensor]], "seg": seg, "fn": 0}, *frames)


class Hostile:
    """Infer function that, when asked, first sends the backend a crafted answer on its own socket."""

    def __init__(self, ipc: pathlib.Path, segment: str) -> None:
        self.ipc, self.segment = str(ipc), segment

    def _channel(self) -> socket.socket:
        for fd in map(int, os.listdir("/proc/self/fd")):
            with contextlib.suppress(OSError):
                sock = socket.socket(fileno=os.dup(fd))
                if (
                    sock.family == socket.AF_UNIX
                    and sock.type == socket.SOCK_STREAM
                    and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                    and str(sock.getsockname()).startswith(self.ipc)
                ):
                    return sock
                sock.close()
        raise AssertionError("no channel socket found")

    def __call__(self, requests: list[Request]) -> list[dict[str, Any]]:
        mode, call_id = (int(v) for v in requests[0]["x"].reshape(-1)[:2])
        crafted = {
            1: _ok(call_id, ["y", "FP32", [1, 2], -1, 4090, 8], seg=self.segment),  # past the segment's end
            2: _ok(call_id, ["y", "FP32", [1, 2], 5, 0, 8], bytes(8)),  # no such frame
            3: _ok(call_id, ["y", "FP32", [1, 3], 0, 0, 8], bytes(8)),  # shape and size disagree
            4: _ok(call_id, ["y", "FP32", [2**40, 2**40], 0, 0, 0], b""),  # shape overflows
            5: _message([1, 2, 3]),  # a header that is not a map
            6: _ok(call_id, ["y", "FP32", [1, 2], 0, 0, 2**62], bytes(8)),  # size beyond its frame
            7: struct.pack("<I", 2**31),  # a broken stream: the backend drops the connection
        }.get(mode)
        if crafted is not None:
            with self._channel() as sock:
                sock.sendall(crafted)
        return [{"y": r["x"]} for r in requests]


HOSTILE_ERRORS = {
    1: "lie outside the 4096-byte segment",
    2: "frame 5 does not exist",
    3: "do not match its shape and datatype FP32",
    4: "the shape overflows",
    5: "the header is not a map",
    6: "its frame holds 8 bytes, not 4611686018427387904",
    7: "the worker sent a message with 2147483648 frames",
}


def test_a_hostile_worker_fails_its_batches_and_never_the_server(tmp_path: pathlib.Path) -> None:
    segment = f"ptt-test-{os.getpid()}-hostile"
    (pathlib.Path("/dev/shm") / segment).write_bytes(bytes(4096))
    try:
        with Triton(config=make_config(), backend="native", workspace=tmp_path / "ws") as server:
            assert server.workspace is not None
            hostile = Hostile(server.workspace.ipc, segment)
            server.bind(
                "hostile",
                hostile,
                VEC,
                [Tensor(name="y", dtype=F32, shape=(-1,))],
                config=ModelConfig(max_batch_size=1),
            )
            client = _http(server)
            call_id = 1  # the handshake's; each call takes the next id
            for mode, expected in HOSTILE_ERRORS.items():
                call_id += 1
                with pytest.raises(InferenceServerException, match=re.escape(expected)):
                    client.infer("hostile", [_x([mode, call_id])])
                if mode == 7:
                    call_id += 1  # the backend reconnects (a new handshake) on the next call
                call_id += 1
                answer = client.infer("hostile", [_x([0, call_id])]).as_numpy("y")
                assert answer.tolist() == [[0, call_id]], mode
            assert client.is_server_live() and client.is_model_ready("hostile")
    finally:
        (pathlib.Path("/dev/shm") / segment).unlink()
