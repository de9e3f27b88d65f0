"""Faults: signals with requests in flight, dead tritonserver, killed stubs, slow user code, two servers.

Clean stop on SIGINT/SIGTERM (idle), SIGKILL clean-up and server death in a thread are covered in
test_lifecycle.py; these tests add the cases with requests in flight and separate processes.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import psutil
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from pytriton_torch import DynamicBatcher, ModelConfig, QueuePolicy, Request, Tensor, Triton
from pytriton_torch.exceptions import PyTritonTorchServerError
from tests.conftest import free_port
from tests.integration.conftest import make_config, shm_entries

F32 = np.float32
IO = ([Tensor(name="x", dtype=F32, shape=(-1,))], [Tensor(name="y", dtype=F32, shape=(-1,))])
BIG = 100_000  # floats: shared memory both ways


def _double(requests: list[Request]) -> list[dict[str, Any]]:
    return [{"y": r["x"] * 2} for r in requests]


class Gate:
    """Infer function that signals ``entered`` and waits for ``release`` before answering."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, requests: list[Request]) -> list[dict[str, Any]]:
        self.entered.set()
        self.release.wait(60)
        return [{"y": r["x"] * 2} for r in requests]


def _client(url: str, timeout: float = 60) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(
        url.removeprefix("http://"), connection_timeout=timeout, network_timeout=timeout
    )


def _infer(url: str, model: str, n: int = 3, value: float = 1.0, timeout: float = 60) -> np.ndarray:
    x = np.full((1, n), value, dtype=F32)
    item = httpclient.InferInput("x", list(x.shape), "FP32")
    item.set_data_from_numpy(x)
    y: np.ndarray = _client(url, timeout).infer(model, [item]).as_numpy("y")
    assert np.array_equal(y, x * 2)
    return y


# -- one shared server for the in-process cases ----------------------------------------------------

STUB_GATE = Gate()
QUEUE_GATE = Gate()
TIMEOUT_GATE = Gate()


@pytest.fixture(scope="module")
def triton() -> Iterator[Triton]:
    with Triton(config=make_config()) as server:
        server.bind("double", _double, *IO, config=ModelConfig(max_batch_size=2))
        server.bind("gated", STUB_GATE, *IO, config=ModelConfig(max_batch_size=2))
        server.bind(
            "bounded_queue",
            QUEUE_GATE,
            *IO,
            config=ModelConfig(
                max_batch_size=1,
                batcher=DynamicBatcher(default_queue_policy=QueuePolicy(max_queue_size=2)),
            ),
        )
        server.bind(
            "queue_timeout",
            TIMEOUT_GATE,
            *IO,
            config=ModelConfig(
                max_batch_size=1,
                batcher=DynamicBatcher(
                    default_queue_policy=QueuePolicy(default_timeout_microseconds=300_000)
                ),
            ),
        )
        yield server


def _stub_of(triton: Triton, model: str) -> psutil.Process:
    assert triton._process is not None and triton._process.pid is not None
    for proc in psutil.Process(triton._process.pid).children(recursive=True):
        if proc.status() == psutil.STATUS_ZOMBIE:  # a killed stub stays a zombie until Triton exits
            continue
        if f"/models/{model}/" in " ".join(proc.cmdline()):
            return proc
    raise AssertionError(f"no stub process for {model}")


def test_killed_stub_fails_in_flight_requests_and_is_restarted(triton: Triton) -> None:
    STUB_GATE.release.set()
    _infer(triton.http_url, "gated", BIG)  # the channel's shared memory is in use before the kill
    STUB_GATE.release.clear()
    STUB_GATE.entered.clear()
    stub = _stub_of(triton, "gated")
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(_infer, triton.http_url, "gated", BIG)
        assert STUB_GATE.entered.wait(30)
        stub.kill()
        with pytest.raises(InferenceServerException, match=r"Stub process 'gated_0' is not healthy"):
            in_flight.result(timeout=60)
    STUB_GATE.release.set()  # the worker thread finishes; its answer goes nowhere
    # Triton starts a new stub, which reconnects to the same worker; later requests succeed.
    deadline = time.monotonic() + 60
    errors: list[str] = []
    while True:
        try:
            _infer(triton.http_url, "gated", BIG)
            break
        except InferenceServerException as exc:
            errors.append(str(exc))
            assert time.monotonic() < deadline, errors
            time.sleep(0.2)
    # requests sent while the model reloads fail cleanly, with Triton's message
    assert all("Stub process 'gated_0' is not healthy" in e for e in errors), errors
    assert _stub_of(triton, "gated").pid != stub.pid
    # the new stub's own Triton region was made private too
    regions = [pathlib.Path("/dev/shm") / n for n in shm_entries(triton._shm_prefix) if "-tb" in n]
    assert regions and all(r.stat().st_mode & 0o777 == 0o600 for r in regions)
    for _ in range(5):
        _infer(triton.http_url, "gated", BIG)
    _infer(triton.http_url, "double")


def test_killed_stub_is_restarted_on_the_zmq_channel_too() -> None:
    """ZeroMQ does not report a vanished peer: the worker watches the stub's pid instead."""
    with Triton(config=make_config(), channel="zmq") as server:
        server.bind("double", _double, *IO, config=ModelConfig(max_batch_size=2))
        _infer(server.http_url, "double", BIG)
        stub = _stub_of(server, "double")
        stub.kill()
        deadline = time.monotonic() + 60
        errors: list[str] = []
        while True:
            try:
                _infer(server.http_url, "double", BIG, timeout=10)
                break
            except InferenceServerException as exc:
                errors.append(str(exc))
                assert time.monotonic() < deadline, errors[-3:]
                time.sleep(0.2)
        assert all("is not healthy" in e for e in errors), errors
        assert _stub_of(server, "double").pid != stub.pid
        for _ in range(3):
            _infer(server.http_url, "double", BIG)


def test_bounded_queue_rejects_instead_of_piling_up(triton: Triton) -> None:
    QUEUE_GATE.release.clear()
    QUEUE_GATE.entered.clear()
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(_infer, triton.http_url, "bounded_queue")
        assert QUEUE_GATE.entered.wait(30)  # the only instance is busy; the queue holds 2
        others = [pool.submit(_infer, triton.http_url, "bounded_queue") for _ in range(6)]
        rejected = _wait_errors(others, expected=4)
        QUEUE_GATE.release.set()
        first.result(timeout=30)
        outcomes = [_outcome(f) for f in others]
    assert sum(o == "ok" for o in outcomes) == 2, outcomes
    assert len(rejected) == 4
    assert all("Exceeds maximum queue size" in message for message in rejected), rejected
    _infer(triton.http_url, "bounded_queue")


def test_queue_timeout_fails_waiting_requests(triton: Triton) -> None:
    TIMEOUT_GATE.release.clear()
    TIMEOUT_GATE.entered.clear()
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(_infer, triton.http_url, "queue_timeout")
        assert TIMEOUT_GATE.entered.wait(30)
        waiting = [pool.submit(_infer, triton.http_url, "queue_timeout") for _ in range(3)]
        messages = _wait_errors(waiting, expected=3)
        TIMEOUT_GATE.release.set()
        first.result(timeout=30)
    assert all("Request timeout expired" in m for m in messages), messages
    _infer(triton.http_url, "queue_timeout")


def test_client_timeout_while_the_function_is_blocked(triton: Triton) -> None:
    QUEUE_GATE.release.clear()
    QUEUE_GATE.entered.clear()
    try:
        with pytest.raises(Exception, match=r"(?i)timed? ?out"):
            _infer(triton.http_url, "bounded_queue", timeout=1)
    finally:
        QUEUE_GATE.release.set()
    _infer(triton.http_url, "bounded_queue")
    _infer(triton.http_url, "double")


def _outcome(future: Future[Any]) -> str:
    try:
        future.result(timeout=60)
        return "ok"
    except InferenceServerException as exc:
        return str(exc)


def _wait_errors(futures: list[Future[Any]], expected: int) -> list[str]:
    """Wait until ``expected`` of ``futures`` failed (they fail while the others still wait)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        failed = [f for f in futures if f.done() and f.exception() is not None]
        if len(failed) >= expected:
            return [str(f.exception()) for f in failed]
        time.sleep(0.05)
    raise AssertionError(f"only {sum(f.done() for f in futures)} of {len(futures)} requests finished")


def test_two_servers_side_by_side(triton: Triton) -> None:
    with Triton(config=make_config()) as other:
        other.bind("double", _double, *IO, config=ModelConfig(max_batch_size=2))
        for server in (triton, other):
            _infer(server.http_url, "double", BIG)
        assert other._shm_prefix != triton._shm_prefix
        assert triton.workspace is not None and other.workspace is not None
        assert other.workspace.root != triton.workspace.root
        sockets = {p.name for p in triton.workspace.ipc.iterdir()} & {
            p.name for p in other.workspace.ipc.iterdir()
        }
        # the same model name gives the same socket file name, but in each server's own folder
        assert sockets
        assert not set(shm_entries(other._shm_prefix)) & set(shm_entries(triton._shm_prefix))
        with ThreadPoolExecutor(4) as pool:
            urls = [s.http_url for s in (triton, other)] * 10
            list(pool.map(lambda url: _infer(url, "double", BIG), urls))
        prefix = other._shm_prefix
    assert shm_entries(prefix) == []
    assert shm_entries(triton._shm_prefix), "stopping one server must not touch the other's memory"
    _infer(triton.http_url, "double", BIG)


def test_dead_tritonserver_after_run_is_reported() -> None:
    """With run() there is no blocking call to raise from: is_alive() and the next bind tell."""
    triton = Triton(config=make_config())
    triton.bind("double", _double, *IO, config=ModelConfig(max_batch_size=2))
    triton.run()
    try:
        _infer(triton.http_url, "double", BIG)
        prefix = triton._shm_prefix
        assert triton._process is not None and triton._process.pid is not None
        server_pid = triton._process.pid
        os.kill(server_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while triton.is_alive() or triton._failure is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with pytest.raises(
            PyTritonTorchServerError, match="cannot load model 'late': tritonserver exited unexpectedly"
        ):
            triton.bind("late", _double, *IO)
    finally:
        triton.stop()
    assert shm_entries(prefix) == []
    assert not psutil.pid_exists(server_pid)  # reaped, not a zombie


# -- separate serving processes -------------------------------------------------------------------

SCRIPT = textwrap.dedent(
    """
    import pathlib, time
    import numpy as np
    from pytriton_torch import ModelConfig, Tensor, Triton, TritonConfig

    def slow(requests):
        pathlib.Path({marker!r}).touch()
        time.sleep(2)
        return [{{"y": r["x"] * 2}} for r in requests]

    config = TritonConfig(http_port={http}, grpc_port={grpc}, metrics_port={metrics})
    with Triton(config=config) as triton:
        triton.bind("double", slow, [Tensor(name="x", dtype=np.float32, shape=(-1,))],
                    [Tensor(name="y", dtype=np.float32, shape=(-1,))], config=ModelConfig(max_batch_size=2))
        print("READY", triton._shm_prefix, triton._process.pid, flush=True)
        triton.serve()
    print("BYE", flush=True)
    """
)


def _start_script(tmp_path: pathlib.Path) -> tuple[subprocess.Popen[str], str, str, int]:
    http = free_port()
    script = tmp_path / "server.py"
    marker = tmp_path / "entered"
    script.write_text(SCRIPT.format(marker=str(marker), http=http, grpc=free_port(), metrics=free_port()))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("READY"), (line, proc.stderr.read() if proc.stderr else "")
    _, prefix, server_pid = line.split()
    return proc, f"http://127.0.0.1:{http}", prefix, int(server_pid)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_in_flight_requests_then_exits_0(tmp_path: pathlib.Path, signum: int) -> None:
    proc, url, prefix, _ = _start_script(tmp_path)
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(_infer, url, "double", BIG)
            deadline = time.monotonic() + 30
            while not (tmp_path / "entered").exists():
                assert time.monotonic() < deadline
                time.sleep(0.02)
            proc.send_signal(signum)
            in_flight.result(timeout=60)  # answered, not cut off
        assert proc.wait(timeout=60) == 0
        assert proc.stdout is not None and "BYE" in proc.stdout.read()
        _gone, alive = psutil.wait_procs(descendants, timeout=10)
        assert alive == []
        assert shm_entries(prefix) == []
    finally:
        if proc.poll() is None:
            proc.kill()


def test_dead_tritonserver_ends_serve_with_an_error_and_nonzero_exit(tmp_path: pathlib.Path) -> None:
    proc, url, prefix, server_pid = _start_script(tmp_path)
    try:
        _infer(url, "double")
        stubs = psutil.Process(server_pid).children(recursive=True)
        os.kill(server_pid, signal.SIGKILL)
        assert proc.wait(timeout=60) != 0
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert "PyTritonTorchServerError" in err and "tritonserver exited unexpectedly" in err, err[-2000:]
        _gone, alive = psutil.wait_procs(stubs, timeout=10)
        assert alive == []
        assert shm_entries(prefix) == []
    finally:
        if proc.poll() is None:
            proc.kill()


RUN_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    from pytriton_torch import Triton, TritonConfig

    triton = Triton(config=TritonConfig(http_port={http}, grpc_port={grpc}, metrics_port={metrics}))
    triton.run()  # serving in the background while the application does its own work
    os.kill(triton._process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while triton._failure is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if sys.argv[1] == "checks":
        print("alive:", triton.is_alive(), flush=True)  # the application noticed: its own exit status
    print("END", flush=True)
    """
)


@pytest.mark.parametrize("mode", ["unnoticed", "checks"])
def test_dead_tritonserver_under_run_makes_the_exit_status_non_zero(
    tmp_path: pathlib.Path, mode: str
) -> None:
    script = tmp_path / "app.py"
    script.write_text(RUN_SCRIPT.format(http=free_port(), grpc=free_port(), metrics=free_port()))
    done = subprocess.run(
        [sys.executable, str(script), mode], capture_output=True, text=True, timeout=120, check=False
    )
    assert "END" in done.stdout, done.stderr
    if mode == "unnoticed":
        assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
        assert "tritonserver exited unexpectedly" in done.stderr
        assert "exiting with status 1" in done.stderr
    else:
        assert "alive: False" in done.stdout
        assert done.returncode == 0, (done.returncode, done.stderr[-2000:])


LOADED_SCRIPT = textwrap.dedent(
    """
    import time
    import numpy as np
    from pytriton_torch import ModelConfig, Tensor, Triton, TritonConfig

    def work(requests):
        time.sleep(0.01)
        return [{{"y": r["x"] * 2}} for r in requests]

    config = TritonConfig(http_port={http}, grpc_port={grpc}, metrics_port={metrics})
    with Triton(config=config) as triton:
        triton.bind("double", [work] * 4, [Tensor(name="x", dtype=np.float32, shape=(-1,))],
                    [Tensor(name="y", dtype=np.float32, shape=(-1,))], config=ModelConfig(max_batch_size=2))
        print("READY", flush=True)
        triton.serve()
    """
)


def test_nothing_outlives_tritonserver_killed_under_load(tmp_path: pathlib.Path) -> None:
    http = free_port()
    script = tmp_path / "server.py"
    script.write_text(LOADED_SCRIPT.format(http=http, grpc=free_port(), metrics=free_port()))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stop = threading.Event()
    answered: list[int] = []
    ours: list[psutil.Process] = []

    def send() -> None:
        client = _client(f"http://127.0.0.1:{http}", timeout=10)
        x = np.ones((1, BIG), dtype=F32)
        item = httpclient.InferInput("x", list(x.shape), "FP32")
        item.set_data_from_numpy(x)
        while not stop.is_set():
            try:
                client.infer("double", [item])
                answered.append(1)
            except Exception:
                time.sleep(0.05)

    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("READY")
        owner = psutil.Process(proc.pid)
        ours = owner.children(recursive=True)
        server = next(p for p in owner.children() if p.name() == "tritonserver")
        stubs = [p for p in ours if p.cmdline()[0].endswith("triton_python_backend_stub")]
        assert len(stubs) == 4, [p.cmdline()[:2] for p in ours]
        clients = [threading.Thread(target=send, daemon=True) for _ in range(8)]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 60
        while len(answered) < 40:  # every stub is busy
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        os.kill(server.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) != 0
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert "PyTritonTorchServerError" in err and "tritonserver exited unexpectedly" in err, err[-2000:]
        _gone, alive = psutil.wait_procs(ours, timeout=10)
        assert alive == [], [(p.pid, p.cmdline()[:1]) for p in alive]
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
        for leftover in ours:  # today's code leaves the stubs running: do not leak them into other tests
            with contextlib.suppress(psutil.Error):
                leftover.kill()
