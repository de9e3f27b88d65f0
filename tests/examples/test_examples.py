"""Every example: start its server.py, run its client.py against it, stop the server with SIGTERM."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from tests.conftest import free_port

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"

CASES = {
    "linear_random_pytorch": (["Linear"], "grpc"),
    "add_sub_python": (["AddSub"], "http"),
    "add_sub_python_with_optional": (["AddSubOptional"], "http"),
    "identity_python": (["Identity"], "grpc"),
    "multiple_models_python": (["Multiply2", "Multiply3"], "grpc"),
    "use_parameters_and_headers": (["ParamsHeaders"], "http"),
}


def _ready(http: int, model: str) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{http}/v2/models/{model}/ready", timeout=1
        ) as response:
            return response.status == 200
    except OSError:
        return False


def test_every_example_folder_is_covered() -> None:
    folders = {p.name for p in EXAMPLES.iterdir() if (p / "server.py").exists()}
    assert folders == set(CASES)
    for name in folders:
        assert (EXAMPLES / name / "client.py").exists() and (EXAMPLES / name / "README.md").exists()


@pytest.mark.parametrize("name", sorted(CASES))
def test_example(name: str) -> None:
    models, protocol = CASES[name]
    ports = {"HTTP_PORT": free_port(), "GRPC_PORT": free_port(), "METRICS_PORT": free_port()}
    env = {**os.environ, **{f"PYTRITON_TRITON_CONFIG_{k}": str(v) for k, v in ports.items()}}
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLES / name / "server.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while not all(_ready(ports["HTTP_PORT"], m) for m in models):
            assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
            assert time.monotonic() < deadline, "server did not get ready"
            time.sleep(0.2)
        port = ports["HTTP_PORT"] if protocol == "http" else ports["GRPC_PORT"]
        client = subprocess.run(
            [sys.executable, str(EXAMPLES / name / "client.py"), "--url", f"localhost:{port}"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert client.returncode == 0, client.stdout + client.stderr
        assert "OK" in client.stdout or name == "linear_random_pytorch"
        descendants = psutil.Process(server.pid).children(recursive=True)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
        _gone, alive = psutil.wait_procs(descendants, timeout=10)
        assert alive == []
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
