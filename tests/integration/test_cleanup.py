"""What failed binds, failed warm-ups, failed starts, stops and killed servers leave behind: nothing.

Observed from the host: threads and descriptors of this process, the workspace folder, /dev/shm,
the processes under tritonserver.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil
import pytest
import tritonclient.http as httpclient

from pytriton_torch import ModelConfig, Request, Tensor, Triton
from pytriton_torch.exceptions import (
    PyTritonTorchError,
    PyTritonTorchModelError,
    PyTritonTorchValidationError,
)
from pytriton_torch.model_config import DynamicBatcher, ModelWarmup, WarmupInput
from tests.conftest import free_port
from tests.integration.conftest import children, make_config

F32 = np.float32
IO = ([Tensor(name="x", dtype=F32, shape=(-1,))], [Tensor(name="y", dtype=F32, shape=(-1,))])
WARMUP = [ModelWarmup(name="zeros", batch_size=2, inputs={"x": WarmupInput(dtype=F32, shape=(4,))})]


def _double(requests: list[Request]) -> list[dict[str, Any]]:
    return [{"y": r["x"] * 2} for r in requests]


def _refuse(requests: list[Request]) -> list[dict[str, Any]]:
    raise RuntimeError("this model cannot warm up")


def _infer(url: str, model: str) -> np.ndarray:
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    item = httpclient.InferInput("x", [1, 4], "FP32")
    item.set_data_from_numpy(np.ones((1, 4), dtype=F32))
    return client.infer(model, [item]).as_numpy("y")


def _infer_ignoring_errors(url: str) -> None:
    with contextlib.suppress(Exception):  # cut off at shutdown; only the server's exit is measured
        _infer(url, "hung")


def _our_segments() -> set[str]:
    return {p.name for p in pathlib.Path("/dev/shm").glob(f"ptt-{os.getpid()}-*")}


def _counts(triton: Triton) -> dict[str, int]:
    me = psutil.Process()
    assert triton.workspace is not None
    root = triton.workspace.root
    return {
        "threads": me.num_threads(),
        "fds": me.num_fds(),
        "sockets": len(list((root / "ipc").iterdir())),
        "model_folders": len(list((root / "models").iterdir())),
        "segments": len(_our_segments()),
        "processes": len(children()),
    }


def _settled(
    measure: Callable[[], dict[str, int]], baseline: dict[str, int], slack: dict[str, int]
) -> dict[str, int]:
    """The counts once they are within ``slack`` of ``baseline`` (closing threads take a moment)."""
    deadline = time.monotonic() + 10
    while True:
        now = measure()
        if all(now[k] <= baseline[k] + slack.get(k, 0) for k in baseline) or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


def _fail_once(triton: Triton, cycle: int) -> None:
    """One bind that fails, of one of four kinds (by cycle), each after the server started."""
    kind = cycle % 4
    if kind == 0:  # Triton refuses the config: preferred batch size over max_batch_size
        config = ModelConfig(max_batch_size=4, batcher=DynamicBatcher(preferred_batch_size=[8]))
        with pytest.raises(PyTritonTorchModelError, match="failed to load"):
            triton.bind(f"refused{cycle}", _double, *IO, config=config)
    elif kind == 1:  # the warm-up sample fails
        with pytest.raises(PyTritonTorchModelError, match=r"warm-?up sample 'zeros'"):
            triton.bind("warmup", _refuse, *IO, config=ModelConfig(max_batch_size=4, model_warmup=WARMUP))
    elif kind == 2:  # a bad name
        with pytest.raises(PyTritonTorchValidationError, match="not valid"):
            triton.bind(f"bad name {cycle}", _double, *IO)
    else:  # the same name as a served model
        with pytest.raises(PyTritonTorchError, match="already bound"):
            triton.bind("served", _double, *IO)


@pytest.mark.parametrize("channel", ["unix", "zmq"])
def test_failed_binds_after_start_leave_nothing(channel: str) -> None:
    segments_before = _our_segments()
    threads_before = psutil.Process().num_threads()
    triton = Triton(config=make_config(), channel=channel)
    triton.run()
    try:
        triton.bind("served", _double, *IO, config=ModelConfig(max_batch_size=4))
        assert triton.workspace is not None
        root = triton.workspace.root
        for cycle in range(8):  # first-use allocations (client pools, lazily started threads)
            _fail_once(triton, cycle)
        baseline = _counts(triton)
        for cycle in range(200):
            _fail_once(triton, cycle)
        after = _settled(lambda: _counts(triton), baseline, {"threads": 2, "fds": 4})
        assert after["threads"] <= baseline["threads"] + 2, (baseline, after)
        assert after["fds"] <= baseline["fds"] + 4, (baseline, after)
        for key in ("sockets", "model_folders", "segments", "processes"):
            assert after[key] <= baseline[key], (key, baseline, after)
        assert sorted(p.name for p in (root / "models").iterdir()) == ["served"]
        np.testing.assert_array_equal(_infer(triton.http_url, "served"), np.full((1, 4), 2, F32))
    finally:
        triton.stop()
    assert not root.exists()
    assert _our_segments() <= segments_before
    assert (
        _settled(
            lambda: {"threads": psutil.Process().num_threads()}, {"threads": threads_before}, {"threads": 1}
        )["threads"]
        <= threads_before + 1
    )


def test_failing_warmups_never_take_the_server_down() -> None:
    with Triton(config=make_config()) as triton:
        triton.bind("served", _double, *IO, config=ModelConfig(max_batch_size=4))
        stop = threading.Event()
        answers: list[bool] = []

        def client() -> None:
            while not stop.is_set():
                try:
                    answers.append(bool(_infer(triton.http_url, "served")[0, 0] == 2))
                except Exception:
                    answers.append(False)
                time.sleep(0.01)

        thread = threading.Thread(target=client)
        thread.start()
        try:
            for attempt in range(30):  # new names and one name used again: both crashed tritonserver
                name = f"cold{attempt}" if attempt % 2 else "cold"
                config = ModelConfig(max_batch_size=4, model_warmup=WARMUP)
                with pytest.raises(PyTritonTorchModelError, match=r"warm-?up sample 'zeros'"):
                    triton.bind(name, _refuse, *IO, config=config)
                assert triton.is_alive(), f"tritonserver died at failing bind {attempt + 1}"
        finally:
            stop.set()
            thread.join()
        assert answers and all(answers), f"{answers.count(False)} of {len(answers)} requests failed"
        np.testing.assert_array_equal(_infer(triton.http_url, "served"), np.full((1, 4), 2, F32))


def test_warmup_samples_run_before_bind_returns() -> None:
    seen: list[tuple[int, tuple[int, ...]]] = []

    def record(requests: list[Request]) -> list[dict[str, Any]]:
        seen.append((len(requests), tuple(requests[0]["x"].shape)))
        return _double(requests)

    with Triton(config=make_config()) as triton:
        triton.bind("warm", record, *IO, config=ModelConfig(max_batch_size=4, model_warmup=WARMUP))
        assert seen == [(2, (1, 4))]  # batch_size requests, one sample each
        np.testing.assert_array_equal(_infer(triton.http_url, "warm"), np.full((1, 4), 2, F32))


def test_too_long_workspace_path_is_refused_at_construction(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    long = tmp_path / ("w" * 90)
    with pytest.raises(PyTritonTorchValidationError, match="shorter path"):
        Triton(workspace=long)
    assert not long.exists()
    monkeypatch.setattr(tempfile, "tempdir", str(long))  # the default workspace lives in TMPDIR
    with pytest.raises(PyTritonTorchValidationError, match="TMPDIR"):
        Triton()
    assert not long.exists()


HUNG = textwrap.dedent(
    """
    import pathlib, threading
    import numpy as np
    from pytriton_torch import ModelConfig, Tensor, Triton, TritonConfig

    def hung(requests):
        pathlib.Path({marker!r}).touch()
        threading.Event().wait()

    config = TritonConfig(http_port={http}, grpc_port={grpc}, metrics_port={metrics}, exit_timeout_secs={timeout})
    with Triton(config=config) as triton:
        triton.bind("hung", hung, [Tensor(name="x", dtype=np.float32, shape=(-1,))],
                    [Tensor(name="y", dtype=np.float32, shape=(-1,))], config=ModelConfig(max_batch_size=2))
        print("READY", flush=True)
        triton.serve()
    print("BYE", flush=True)
    """
)


def test_sigterm_with_a_hung_function_exits_within_the_exit_timeout(tmp_path: pathlib.Path) -> None:
    exit_timeout = 8
    http, marker = free_port(), tmp_path / "entered"
    script = tmp_path / "server.py"
    script.write_text(
        HUNG.format(
            marker=str(marker), http=http, grpc=free_port(), metrics=free_port(), timeout=exit_timeout
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("READY")
        threading.Thread(
            target=_infer_ignoring_errors, args=(f"http://127.0.0.1:{http}",), daemon=True
        ).start()
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        took = time.monotonic() - started
        assert "BYE" in proc.stdout.read()
        assert took < exit_timeout + 5, f"stopping took {took:.1f}s with exit_timeout_secs={exit_timeout}"
        assert proc.stderr is not None and "abandoned" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


SERVING = textwrap.dedent(
    """
    from pytriton_torch import Triton, TritonConfig

    with Triton(config=TritonConfig(http_port={http}, grpc_port={grpc}, metrics_port={metrics})) as triton:
        print("READY", triton.workspace.root, flush=True)
        triton.serve()
    """
)


def _serving_script(tmp_path: pathlib.Path, name: str) -> tuple[subprocess.Popen[str], pathlib.Path]:
    script = tmp_path / f"{name}.py"
    script.write_text(SERVING.format(http=free_port(), grpc=free_port(), metrics=free_port()))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("READY"), line
    return proc, pathlib.Path(line.split()[1])


def test_stale_workspace_of_a_killed_server_is_removed_at_the_next_start(tmp_path: pathlib.Path) -> None:
    live, live_root = _serving_script(tmp_path, "live")
    killed, killed_root = _serving_script(tmp_path, "killed")
    foreign = pathlib.Path(tempfile.mkdtemp(prefix="pytriton_torch-"))  # not made by a server
    try:
        descendants = psutil.Process(killed.pid).children(recursive=True)
        killed.kill()
        killed.wait()
        psutil.wait_procs(descendants, timeout=20)
        assert killed_root.exists()
        with Triton(config=make_config()):
            assert not killed_root.exists()
            assert live_root.exists()
            assert foreign.exists()
        assert live.poll() is None
    finally:
        for proc in (live, killed):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=60)
        foreign.rmdir()
    assert not live_root.exists()


FAILED_START = textwrap.dedent(
    """
    import glob, os, tempfile
    from pytriton_torch import Triton, TritonConfig
    from pytriton_torch.exceptions import PyTritonTorchServerError

    config = TritonConfig(http_port={http}, grpc_port={grpc}, metrics_port={metrics},
                          model_repository="/nonexistent/model/repository")
    try:
        Triton(config=config).run()
    except PyTritonTorchServerError:
        print("FAILED AS EXPECTED", flush=True)
    print("LEFT", len(glob.glob(f"{{tempfile.gettempdir()}}/pytriton_torch-{{os.getpid()}}-*")), flush=True)
    """
)


def test_a_failed_start_that_was_handled_leaves_nothing_and_exits_0(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "start.py"
    script.write_text(FAILED_START.format(http=free_port(), grpc=free_port(), metrics=free_port()))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert "FAILED AS EXPECTED" in done.stdout, done.stderr[-2000:]
    assert "LEFT 0" in done.stdout
    assert done.returncode == 0, done.stderr[-2000:]
