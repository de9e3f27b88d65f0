"""Run every example: start its server.py, run its client.py against it, stop the server with SIGTERM.

Each server gets free ports through the ``PYTRITON_TRITON_CONFIG_*_PORT`` variables. After the
client passed, SIGTERM must stop the server with exit status 0 within 30 s, leaving no
``tritonserver`` or ``triton_python_backend_stub`` process behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import psutil
import pytest

from tests.conftest import free_port, run_client

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
TRITON_PROCESS_NAMES = ("tritonserver", "triton_python_backend_stub")


@dataclasses.dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int


@dataclasses.dataclass(frozen=True)
class Case:
    models: tuple[str, ...]
    url: Callable[[Ports], str]  # the --url given to client.py


CASES: dict[str, Case] = {
    # ModelClient over gRPC here, over HTTP in add_sub_python_with_optional
    "linear_random_pytorch": Case(("Linear",), lambda p: f"grpc://127.0.0.1:{p.grpc}"),
    "add_sub_python": Case(("AddSub",), lambda p: f"127.0.0.1:{p.http}"),
    "add_sub_python_with_optional": Case(("AddSubOptional",), lambda p: f"127.0.0.1:{p.http}"),
    "identity_python": Case(("Identity",), lambda p: f"127.0.0.1:{p.grpc}"),
    "multiple_models_python": Case(("Multiply2", "Multiply3"), lambda p: f"127.0.0.1:{p.grpc}"),
    "use_parameters_and_headers": Case(("ParamsHeaders",), lambda p: f"127.0.0.1:{p.http}"),
    "torch_linear": Case(("linear",), lambda p: f"127.0.0.1:{p.http}"),
    "torch_cnn": Case(("cnn",), lambda p: f"127.0.0.1:{p.http}"),
    "torch_dict_outputs": Case(("embedder",), lambda p: f"127.0.0.1:{p.grpc}"),
    "torch_streaming": Case(("count_up",), lambda p: f"127.0.0.1:{p.grpc}"),
    "model_repository": Case(("addsub_torchscript", "model_directory"), lambda p: f"127.0.0.1:{p.http}"),
}


def _free_ports() -> Ports:
    while True:
        ports = Ports(free_port(), free_port(), free_port())
        if len({ports.http, ports.grpc, ports.metrics}) == 3:
            return ports


def _model_ready(http_port: int, model: str) -> bool:
    url = f"http://127.0.0.1:{http_port}/v2/models/{model}/ready"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: pathlib.Path, chars: int = 6000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-chars:]


def _triton_processes(processes: list[psutil.Process]) -> list[psutil.Process]:
    found = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if any(name in process.name() for name in TRITON_PROCESS_NAMES):
                found.append(process)
    return found


@contextlib.contextmanager
def running_server(script: pathlib.Path, models: tuple[str, ...], log: pathlib.Path) -> Iterator[Ports]:
    """Start ``script`` on free ports, wait until ``models`` are ready, and stop it with SIGTERM on exit.

    On a normal exit this asserts that the server exits with status 0 within STOP_TIMEOUT_S and that
    none of the processes it started is left.
    """
    ports = _free_ports()
    env = {
        **os.environ,
        "PYTRITON_TRITON_CONFIG_HTTP_PORT": str(ports.http),
        "PYTRITON_TRITON_CONFIG_GRPC_PORT": str(ports.grpc),
        "PYTRITON_TRITON_CONFIG_METRICS_PORT": str(ports.metrics),
        "PYTHONUNBUFFERED": "1",
    }
    with log.open("wb") as log_file:
        # output goes to a file, not a pipe nobody reads, so a chatty server can never block on it
        server = subprocess.Popen(
            [sys.executable, str(script)],
            env=env,
            cwd=script.parent,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(_model_ready(ports.http, model) for model in models):
            assert server.poll() is None, (
                f"{script} exited with {server.returncode} before {models} were ready:\n{_tail(log)}"
            )
            assert time.monotonic() < deadline, f"{models} not ready after {READY_TIMEOUT_S} s:\n{_tail(log)}"
            time.sleep(0.2)

        yield ports

        descendants = psutil.Process(server.pid).children(recursive=True)
        tritons = _triton_processes(descendants)
        # sanity check of the check below: the server really runs tritonserver and its model stubs
        assert any("tritonserver" in p.name() for p in tritons), [p.name() for p in descendants]
        assert any("triton_python_backend_stub" in p.name() for p in tritons), [p.name() for p in descendants]

        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"server still running {STOP_TIMEOUT_S} s after SIGTERM:\n{_tail(log)}")
        assert code == 0, f"server exited with {code} after SIGTERM:\n{_tail(log)}"
        # The server's own exit must have taken its children with it; allow a moment for them to be reaped.
        _gone, alive = psutil.wait_procs(descendants, timeout=5)
        left = [f"{p.pid} {p.name()}" for p in _triton_processes(alive)]
        assert not left, f"left behind after the server exited: {left}"
        assert not alive, f"processes left behind: {[p.pid for p in alive]}"
    finally:
        if server.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server.pid, signal.SIGKILL)  # anything of its session still alive after a failure


def test_every_example_is_tested_and_documented() -> None:
    folders = {
        path.name for path in EXAMPLES.iterdir() if path.is_dir() and not path.name.startswith((".", "_"))
    }
    assert folders == set(CASES)
    index = (EXAMPLES / "README.md").read_text()
    for name in folders:
        for file in ("server.py", "client.py", "README.md"):
            assert (EXAMPLES / name / file).is_file(), f"{name}/{file} is missing"
        assert f"]({name})" in index, f"{name} is not listed in examples/README.md"


# Kept as a top-level script on purpose (the "served in five lines" example).
NOT_CLI_SERVABLE = {"torch_linear"}


def test_examples_can_be_served_by_the_cli() -> None:
    """`pytriton-torch serve examples/<name>/server.py` calls bind_models(triton) and must not
    start a server on import; a folder that is a model repository is served as
    `pytriton-torch serve examples/<name>` (tests/integration/test_cli.py serves some both ways)."""
    import ast

    for name in sorted(set(CASES) - NOT_CLI_SERVABLE):
        if any((EXAMPLES / name).glob("*/config.pbtxt")):
            continue  # a model repository: the folder is the serve target
        tree = ast.parse((EXAMPLES / name / "server.py").read_text())
        binders = [
            node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "bind_models"
        ]
        assert binders and len(binders[0].args.args) == 1, f"{name}/server.py has no bind_models(triton)"
        top_level_with = [node for node in tree.body if isinstance(node, ast.With)]
        assert not top_level_with, f"{name}/server.py starts a server when imported"


@pytest.mark.parametrize("name", list(CASES))
def test_example(name: str, tmp_path: pathlib.Path) -> None:
    case = CASES[name]
    with running_server(EXAMPLES / name / "server.py", case.models, tmp_path / "server.log") as ports:
        client = run_client(EXAMPLES / name / "client.py", case.url(ports))
        assert client.returncode == 0, (
            f"client failed ({client.returncode}):\n{client.stdout}\n{client.stderr}"
        )
        assert "OK" in client.stdout.splitlines(), client.stdout


WRONG_ADD_SUB_SERVER = """
import numpy as np

from pytriton_torch.decorators import batch
from pytriton_torch.model_config import ModelConfig, Tensor
from pytriton_torch.triton import Triton


@batch
def add_sub(a, b):
    return {"add": a + b, "sub": b - a}  # wrong: sub must be a - b


with Triton() as triton:
    triton.bind(
        "AddSub",
        add_sub,
        [Tensor(name="a", dtype=np.float32, shape=(-1,)), Tensor(name="b", dtype=np.float32, shape=(-1,))],
        [Tensor(name="add", dtype=np.float32, shape=(-1,)), Tensor(name="sub", dtype=np.float32, shape=(-1,))],
        config=ModelConfig(max_batch_size=128),
    )
    triton.serve()
"""


def test_client_rejects_a_wrong_answer(tmp_path: pathlib.Path) -> None:
    """The clients really check: add_sub's client fails against a server whose "sub" is wrong."""
    script = tmp_path / "wrong_server.py"
    script.write_text(textwrap.dedent(WRONG_ADD_SUB_SERVER))
    with running_server(script, ("AddSub",), tmp_path / "server.log") as ports:
        client = run_client(EXAMPLES / "add_sub_python" / "client.py", f"127.0.0.1:{ports.http}")
    assert client.returncode == 1, f"{client.returncode}\n{client.stdout}\n{client.stderr}"
    assert "WRONG ANSWER" in client.stdout, client.stdout
