"""Start, stop, signals and clean-up of the tritonserver child process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import numpy as np
import psutil
import pytest
import tritonclient.http as httpclient

from pytriton_torch import ModelConfig, Request, Tensor, Triton, TritonConfig
from pytriton_torch.exceptions import (
    PyTritonTorchInvalidOperationError,
    PyTritonTorchPortInUseError,
    PyTritonTorchServerError,
    PyTritonTorchValidationError,
)
from tests.conftest import free_port
from tests.integration.conftest import children, make_config, shm_entries

F32 = np.float32
IO = ([Tensor(name="x", dtype=F32, shape=(-1,))], [Tensor(name="y", dtype=F32, shape=(-1,))])


def _double(requests: list[Request]) -> list[dict[str, Any]]:
    return [{"y": r["x"] * 2} for r in requests]


def _query(url: str, model: str = "double") -> np.ndarray:
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    x = np.ones((1, 300_000), dtype=F32)  # large enough to use shared memory both ways
    item = httpclient.InferInput("x", list(x.shape), "FP32")
    item.set_data_from_numpy(x)
    return client.infer(model, [item]).as_numpy("y")


def test_bind_before_run_then_clean_stop() -> None:
    triton = Triton(config=make_config())
    triton.bind("double", _double, *IO, config=ModelConfig(max_batch_size=2))
    triton.run()
    prefix = triton._shm_prefix
    workspace = triton.workspace
    assert workspace is not None and oct(workspace.root.stat().st_mode & 0o777) == "0o700"
    try:
        assert np.array_equal(_query(triton.http_url), np.full((1, 300_000), 2, dtype=F32))
        assert shm_entries(prefix), "large tensors should have used shared memory"
        assert any("tritonserver" in p.name() for p in children())
    finally:
        assert triton.stop() is True
    assert triton.stop() is False  # idempotent
    assert not [p for p in children() if "triton" in " ".join(p.cmdline())]
    assert shm_entries(prefix) == []
    assert not workspace.root.exists()


def test_bind_errors() -> None:
    with Triton(config=make_config()) as triton:
        triton.bind("double", _double, *IO)
        with pytest.raises(PyTritonTorchInvalidOperationError, match="'double' is already bound"):
            triton.bind("double", _double, *IO)
        with pytest.raises(PyTritonTorchValidationError, match="model name 'bad name' is not valid"):
            triton.bind("bad name", _double, *IO)
        with pytest.raises(PyTritonTorchValidationError, match="input name 'x' is repeated"):
            triton.bind("twice", _double, [IO[0][0], IO[0][0]], IO[1])
        with pytest.raises(PyTritonTorchValidationError, match="is not callable"):
            triton.bind("notcallable", [42], *IO)  # type: ignore[list-item]
    with pytest.raises(PyTritonTorchInvalidOperationError, match="was stopped"):
        triton.bind("late", _double, *IO)


def _unnamed(requests: list[Request]) -> list[dict[str, Any]]:
    return [{"OUTPUT_1": r["INPUT_1"] + r["INPUT_2"]} for r in requests]


def test_unnamed_tensors_get_pytriton_default_names() -> None:
    with Triton(config=make_config()) as triton:
        triton.bind(
            "unnamed", _unnamed, [Tensor(dtype=F32, shape=(-1,))] * 2, [Tensor(dtype=F32, shape=(-1,))]
        )
        client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
        config = client.get_model_config("unnamed")
        assert [i["name"] for i in config["input"]] == ["INPUT_1", "INPUT_2"]
        assert [o["name"] for o in config["output"]] == ["OUTPUT_1"]
        items = []
        for name in ("INPUT_1", "INPUT_2"):
            item = httpclient.InferInput(name, [1, 2], "FP32")
            item.set_data_from_numpy(np.ones((1, 2), dtype=F32))
            items.append(item)
        assert client.infer("unnamed", items).as_numpy("OUTPUT_1").tolist() == [[2.0, 2.0]]


def test_port_in_use_names_the_port() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        busy = blocker.getsockname()[1]
        config = make_config(grpc_port=busy)
        with pytest.raises(PyTritonTorchPortInUseError, match=f"grpc port {busy}"):
            Triton(config=config).run()


def test_config_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("PYTRITON_TRITON_CONFIG_HTTP_PORT", str(port))
    monkeypatch.setenv("PYTRITON_TRITON_CONFIG_GRPC_PORT", str(free_port()))
    monkeypatch.setenv("PYTRITON_TRITON_CONFIG_METRICS_PORT", str(free_port()))
    with Triton() as triton:
        assert triton.http_url == f"http://127.0.0.1:{port}"
        triton.bind("double", _double, *IO)
        assert np.array_equal(_query(triton.http_url), np.full((1, 300_000), 2, dtype=F32))


def test_serve_in_a_thread_until_stop() -> None:
    triton = Triton(config=make_config())
    triton.bind("double", _double, *IO)
    thread = threading.Thread(target=triton.serve, kwargs={"monitoring_period_s": 0.1})
    thread.start()
    deadline = time.monotonic() + 60
    while not triton.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
    while not client.is_model_ready("double") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert np.array_equal(_query(triton.http_url), np.full((1, 300_000), 2, dtype=F32))
    triton.stop()
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_server_death_makes_serve_fail() -> None:
    triton = Triton(config=make_config())
    triton.run()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            triton.serve(monitoring_period_s=0.1)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    assert triton._process is not None and triton._process.pid is not None
    os.kill(triton._process.pid, signal.SIGKILL)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], PyTritonTorchServerError)
    assert "exited unexpectedly" in str(errors[0])


SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from pytriton_torch import ModelConfig, Tensor, Triton, TritonConfig

    def infer(requests):
        return [{{"y": r["x"] * 2}} for r in requests]

    with Triton(config=TritonConfig(http_port={http}, grpc_port={grpc}, metrics_port={metrics})) as triton:
        triton.bind("double", infer, [Tensor(name="x", dtype=np.float32, shape=(-1,))],
                    [Tensor(name="y", dtype=np.float32, shape=(-1,))], config=ModelConfig(max_batch_size=2))
        print("READY", triton._shm_prefix, flush=True)
        triton.serve()
    print("BYE", flush=True)
    """
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_a_serving_script_cleanly(tmp_path: Any, signum: int) -> None:
    http = free_port()
    script = tmp_path / "server.py"
    script.write_text(SCRIPT.format(http=http, grpc=free_port(), metrics=free_port()))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY"), line
        prefix = line.split()[1]
        assert np.array_equal(_query(f"http://127.0.0.1:{http}"), np.full((1, 300_000), 2, dtype=F32))
        descendants = psutil.Process(proc.pid).children(recursive=True)
        assert descendants
        proc.send_signal(signum)
        assert proc.wait(timeout=60) == 0
        assert "BYE" in proc.stdout.read()
        _gone, alive = psutil.wait_procs(descendants, timeout=10)
        assert alive == []
        assert shm_entries(prefix) == []
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigkill_of_owner_leaves_nothing_after_next_start(tmp_path: Any) -> None:
    http = free_port()
    script = tmp_path / "server.py"
    script.write_text(SCRIPT.format(http=http, grpc=free_port(), metrics=free_port()))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    prefix = line.split()[1]
    _query(f"http://127.0.0.1:{http}")
    descendants = psutil.Process(proc.pid).children(recursive=True)
    proc.kill()
    proc.wait()
    _gone, alive = psutil.wait_procs(descendants, timeout=20)
    assert alive == [], "tritonserver and stubs must exit when their owner is killed"
    with Triton(config=make_config()):
        assert shm_entries(prefix) == []


def test_triton_config_args() -> None:
    args = TritonConfig(
        http_port=1, log_verbose=1, exit_on_error=True, response_cache_byte_size=1024
    ).to_args()
    assert "--http-port=1" in args and "--log-verbose=1" in args and "--exit-on-error=true" in args
    assert "--cache-config=local,size=1024" in args
    assert "--http-address=127.0.0.1" in args and "--grpc-address=127.0.0.1" in args


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, requests: list[Request]) -> list[dict[str, Any]]:
        self.calls += 1
        return [{"y": r["x"] * 2} for r in requests]


def test_response_cache_answers_repeated_requests_without_calling_the_function() -> None:
    counter = Counter()
    with Triton(config=make_config(response_cache_byte_size=16 << 20)) as triton:
        triton.bind("cached", counter, *IO, config=ModelConfig(max_batch_size=2, response_cache=True))
        first = _query(triton.http_url, "cached")
        second = _query(triton.http_url, "cached")
    assert np.array_equal(first, second)
    assert counter.calls == 1


def test_unknown_channel_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        PyTritonTorchValidationError, match="channel='tcp' is not supported; expected one of unix, zmq"
    ):
        Triton(channel="tcp")
    monkeypatch.setenv("PYTRITON_TORCH_CHANNEL", "carrier-pigeon")
    with pytest.raises(PyTritonTorchValidationError, match="channel='carrier-pigeon'"):
        Triton()
