"""``pytriton-torch serve`` and ``infer`` as users run them: real processes, real tritonserver, real clients.

One ``serve`` process (the add_sub example through ``FILE.py:bind_models``) is shared by the module;
its teardown checks that SIGTERM stops it with exit status 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import free_port, run_client

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# the installed console script, as users run it (the module where no script sits beside this Python)
_SCRIPT = pathlib.Path(sys.executable).parent / "pytriton-torch"
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "pytriton_torch.cli"]
READY_TIMEOUT_S = 120.0


@dataclasses.dataclass
class Served:
    process: subprocess.Popen[bytes]
    log: pathlib.Path
    http: int
    grpc: int
    metrics: int

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _ports() -> list[str]:
    ports = {free_port() for _ in range(3)}
    while len(ports) < 3:
        ports.add(free_port())
    http, grpc, metrics = sorted(ports)
    return ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]


def _ready(http_port: int, model: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/{model}/ready", timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def serve(args: list[str], log: pathlib.Path, models: tuple[str, ...]) -> Iterator[Served]:
    """Run ``pytriton-torch serve ARGS`` until ``models`` are ready; SIGTERM it at the end."""
    port_args = _ports()
    http, grpc, metrics = (int(port_args[i]) for i in (1, 3, 5))
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*CLI, "--log-level", "info", "serve", *args, *port_args],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
            start_new_session=True,
        )
    served = Served(process, log, http, grpc, metrics)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(_ready(http, m) for m in models):
            assert process.poll() is None, f"serve exited with {process.returncode}:\n{served.output()}"
            assert time.monotonic() < deadline, f"{models} not ready:\n{served.output()}"
            time.sleep(0.2)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.fixture(scope="module")
def add_sub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    log = tmp_path_factory.mktemp("cli") / "serve.log"
    with serve([str(EXAMPLES / "add_sub_python" / "server.py")], log, ("AddSub",)) as served:
        yield served
        served.process.send_signal(signal.SIGTERM)
        code = served.process.wait(timeout=30)
        assert code == 0, f"serve exited with {code} after SIGTERM:\n{served.output()}"
    assert "AddSub" in served.output() and "ready" in served.output()


def test_progress_and_endpoints_are_printed(add_sub: Served) -> None:
    text = add_sub.output()
    assert "AddSub" in text and "ready" in text
    assert f"http://127.0.0.1:{add_sub.http}" in text
    assert f"http://127.0.0.1:{add_sub.metrics}/metrics" in text


def test_example_client_works_against_cli_server(add_sub: Served) -> None:
    client = run_client(EXAMPLES / "add_sub_python" / "client.py", f"127.0.0.1:{add_sub.http}")
    assert client.returncode == 0, client.stdout + client.stderr
    assert "OK" in client.stdout.splitlines()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_infer_json_output(add_sub: Served, protocol: str, tmp_path: pathlib.Path) -> None:
    np.save(tmp_path / "a.npy", np.array([[1.0, 2.0, 3.0]], dtype=np.float32))
    (tmp_path / "b.json").write_text("[0.5, 0.25, 2]")  # no batch axis: the CLI adds it
    url = f"127.0.0.1:{add_sub.http}" if protocol == "http" else f"grpc://127.0.0.1:{add_sub.grpc}"
    result = run_cli(
        "infer",
        "AddSub",
        "-i",
        f"a={tmp_path / 'a.npy'}",
        "-i",
        f"b={tmp_path / 'b.json'}",
        "--url",
        url,
        "--json",
        "--save",
        str(tmp_path / "out"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["outputs"]["add"] == {"datatype": "FP32", "shape": [1, 3], "data": [[1.5, 2.25, 5.0]]}
    assert doc["outputs"]["sub"]["data"] == [[0.5, 1.75, 1.0]]
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "sub.npy"), [[0.5, 1.75, 1.0]])


def test_infer_table_output_and_output_filter(add_sub: Served) -> None:
    result = run_cli(
        "infer",
        "AddSub",
        "-i",
        "a=[[4, 4]]",
        "-i",
        "b=[[1, 3]]",
        "-o",
        "sub",
        "--url",
        f"127.0.0.1:{add_sub.http}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[[3. 1.]]" in result.stdout
    assert "add" not in result.stdout.replace("AddSub", "")


def test_infer_errors(add_sub: Served) -> None:
    url = f"127.0.0.1:{add_sub.http}"
    unknown_model = run_cli("infer", "Nope", "-i", "a=[1]", "--url", url)
    assert unknown_model.returncode == 1
    assert "Nope" in unknown_model.stderr
    unknown_input = run_cli("infer", "AddSub", "-i", "c=[1]", "--url", url)
    assert unknown_input.returncode == 2
    assert "no input 'c'" in unknown_input.stderr and "a (FP32" in unknown_input.stderr
    unknown_output = run_cli("infer", "AddSub", "-i", "a=[1]", "-i", "b=[1]", "-o", "mul", "--url", url)
    assert unknown_output.returncode == 2
    assert "no output 'mul'" in unknown_output.stderr


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_request_id_in_error_and_log(add_sub: Served, protocol: str) -> None:
    """An infer function failure names the client's request id in the answer and in the server's log."""
    request_id = f"req-{protocol}-{os.getpid()}"
    a = np.ones((1, 3), dtype=np.float32)
    b = np.ones((1, 2), dtype=np.float32)  # shapes that cannot be added: the function raises
    module = httpclient if protocol == "http" else grpcclient
    url = f"127.0.0.1:{add_sub.http if protocol == 'http' else add_sub.grpc}"
    client = module.InferenceServerClient(url)
    inputs = [module.InferInput("a", list(a.shape), "FP32"), module.InferInput("b", list(b.shape), "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    with pytest.raises(InferenceServerException) as info:
        client.infer("AddSub", inputs, request_id=request_id)
    client.close()
    assert f"[request id: {request_id}]" in info.value.message()
    assert "ValueError" in info.value.message()
    deadline = time.monotonic() + 10
    while request_id not in add_sub.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    log_lines = [line for line in add_sub.output().splitlines() if request_id in line]
    assert log_lines and "infer function failed" in log_lines[0], add_sub.output()[-3000:]
    # and the server keeps serving
    ok = run_cli("infer", "AddSub", "-i", "a=[1]", "-i", "b=[1]", "--url", f"127.0.0.1:{add_sub.http}")
    assert ok.returncode == 0, ok.stderr


def test_request_without_id_has_no_id_suffix(add_sub: Served) -> None:
    result = run_cli(
        "infer", "AddSub", "-i", "a=[1, 2]", "-i", "b=[1, 2, 3]", "--url", f"127.0.0.1:{add_sub.http}"
    )
    assert result.returncode == 1
    assert "ValueError" in result.stderr and "request id" not in result.stderr


def test_serve_multiple_models_with_module_object(tmp_path: pathlib.Path) -> None:
    """``package.module:NAME`` form, several models and instances; the example's own client checks them."""
    with serve(
        ["examples.multiple_models_python.server:bind_models"],
        tmp_path / "serve.log",
        ("Multiply2", "Multiply3"),
    ) as served:
        client = run_client(EXAMPLES / "multiple_models_python" / "client.py", f"127.0.0.1:{served.grpc}")
        assert client.returncode == 0, client.stdout + client.stderr
        assert "Multiply3" in served.output()


BROKEN_BINDER = """
import numpy as np
from pytriton_torch import Tensor


def bind_models(triton):
    triton.bind("fine", lambda requests: [], [Tensor(name="x", dtype=np.float32, shape=(-1,))],
                [Tensor(name="y", dtype=np.float32, shape=(-1,))])
    triton.bind("bad name!", lambda requests: [], [], [])
"""


def test_serve_binder_failure_exits_3(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text(textwrap.dedent(BROKEN_BINDER))
    result = run_cli("serve", str(script), *_ports())
    assert result.returncode == 3, result.stdout + result.stderr
    assert "bad name!" in result.stderr and "is not valid" in result.stderr


def test_serve_binder_that_binds_nothing_exits_3(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "empty.py"
    script.write_text("def bind_models(triton):\n    pass\n")
    result = run_cli("serve", str(script), *_ports())
    assert result.returncode == 3, result.stdout + result.stderr
    assert "bound no model" in result.stderr


def _scrape(port: int) -> dict[str, float]:
    """Metric series of the metrics page: ``'name{labels}' -> value``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    series = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            series[key] = float(value)
    return series


def _value(series: dict[str, float], name: str, model: str) -> float:
    """Sum of ``name`` over the series of ``model`` (all instances/versions)."""
    return sum(v for k, v in series.items() if k.startswith(name + "{") and f'model="{model}"' in k)


def test_metrics_page_has_triton_and_channel_series(add_sub: Served) -> None:
    """Triton's per-model series (those the docs and deploy/ use) and our channel series are exported."""
    from tests.unit.test_deploy import TRITON_SERIES

    time.sleep(1.2)  # let the proxy push what earlier tests left (it pushes at most once a second)
    ok = run_cli("infer", "AddSub", "-i", "a=[1]", "-i", "b=[1]", "--url", f"127.0.0.1:{add_sub.http}")
    assert ok.returncode == 0, ok.stderr
    before = _scrape(add_sub.metrics)
    for name in TRITON_SERIES:
        assert any(k.startswith(name + "{") and 'model="AddSub"' in k for k in before), name

    client = httpclient.InferenceServerClient(f"127.0.0.1:{add_sub.http}")
    a = np.ones((1, 65536), dtype=np.float32)  # 256 KiB: over the inline limit, crosses in shared memory
    inputs = [httpclient.InferInput("a", [1, 65536], "FP32"), httpclient.InferInput("b", [1, 65536], "FP32")]
    for item in inputs:
        item.set_data_from_numpy(a)
    sent = 5
    for _ in range(sent - 1):
        client.infer("AddSub", inputs)
    time.sleep(1.2)
    client.infer("AddSub", inputs)  # this batch finds the push interval over and pushes everything
    client.close()
    after = _scrape(add_sub.metrics)

    requests = _value(after, "pytriton_torch_channel_requests_total", "AddSub") - _value(
        before, "pytriton_torch_channel_requests_total", "AddSub"
    )
    assert requests == sent
    batches = _value(after, "pytriton_torch_channel_batches_total", "AddSub") - _value(
        before, "pytriton_torch_channel_batches_total", "AddSub"
    )
    assert 1 <= batches <= sent
    round_trip = _value(after, "pytriton_torch_channel_round_trip_us_total", "AddSub")
    hop = _value(after, "pytriton_torch_channel_hop_us_total", "AddSub")
    assert 0 < hop <= round_trip
    assert _value(after, "pytriton_torch_channel_shm_bytes", "AddSub") >= 1 << 20  # one segment at least
    assert _value(after, "nv_inference_request_success", "AddSub") >= sent


def _repository(repo: pathlib.Path) -> pathlib.Path:
    """One TorchScript model that loads (``good``) and two that fail (no model file)."""
    from tests.unit.test_repository import AddSub, addsub_config, write_model

    write_model(repo, "good", addsub_config(), {"model.pt": AddSub()})
    write_model(repo, "no_file", addsub_config())
    write_model(repo, "also_broken", addsub_config())
    return repo


def test_serve_repository_failing_model_exits_3(tmp_path: pathlib.Path) -> None:
    """Only the --model selection is loaded; one of them fails, so serve stops with 3 naming it."""
    repo = _repository(tmp_path / "repo")
    result = run_cli("serve", str(repo), "--model", "good", "--model", "no_file", *_ports())
    assert result.returncode == 3, result.stdout + result.stderr
    assert "no_file" in result.stderr and "--allow-partial" in result.stderr
    assert "also_broken" not in result.stderr  # not selected, not loaded


def test_serve_repository_allow_partial(tmp_path: pathlib.Path) -> None:
    repo = _repository(tmp_path / "repo")
    with serve([str(repo), "--allow-partial"], tmp_path / "serve.log", ("good",)) as served:
        result = run_cli(
            "infer",
            "good",
            "-i",
            "INPUT0=[1, 2, 3, 4]",
            "-i",
            "INPUT1=[1, 1, 1, 1]",
            "--url",
            f"grpc://127.0.0.1:{served.grpc}",
            "--json",
        )
        assert result.returncode == 0, result.stdout + result.stderr
        outputs = json.loads(result.stdout)["outputs"]
        assert outputs["OUTPUT__0"]["data"] == [[2.0, 3.0, 4.0, 5.0]]
        assert outputs["OUTPUT__1"]["data"] == [[0.0, 1.0, 2.0, 3.0]]
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=30) == 0, served.output()
    text = served.output()
    assert "no_file" in text and "also_broken" in text and "failed" in text
    assert "serving good" in text


SLOW_BINDER = """
import time

import numpy as np
from pytriton_torch import Tensor


def bind_models(triton):
    triton.bind("first", lambda requests: [], [Tensor(name="x", dtype=np.float32, shape=(-1,))],
                [Tensor(name="y", dtype=np.float32, shape=(-1,))])
    time.sleep(120)  # a second model that takes long to prepare
"""


def test_sigterm_while_loading_stops_cleanly(tmp_path: pathlib.Path) -> None:
    """SIGTERM before serving (e.g. a pod deleted during a long load) stops tritonserver; exit 130."""
    import psutil

    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent(SLOW_BINDER))
    with serve([str(script)], tmp_path / "serve.log", ("first",)) as served:
        children = psutil.Process(served.process.pid).children(recursive=True)
        assert any("tritonserver" in p.name() for p in children)
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=30) == 130, served.output()
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [p.name() for p in alive]
    assert "interrupted before serving" in served.output()


def test_infer_streams_a_decoupled_model(tmp_path: pathlib.Path) -> None:
    """The streaming example served by the CLI; `infer` over gRPC prints every streamed response."""
    script = EXAMPLES / "torch_streaming" / "server.py"
    with serve([str(script)], tmp_path / "serve.log", ("count_up",)) as served:
        grpc_url = f"grpc://127.0.0.1:{served.grpc}"
        result = run_cli(
            "infer",
            "count_up",
            "-i",
            "start=[5]",
            "-i",
            "steps=[3]",
            "--url",
            grpc_url,
            "--json",
            "--save",
            str(tmp_path / "out"),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        responses = json.loads(result.stdout)["responses"]
        assert [r["value"]["data"] for r in responses] == [[[5]], [[6]], [[7]]]
        assert np.load(tmp_path / "out" / "value_2.npy").tolist() == [[7]]
        over_http = run_cli(
            "infer", "count_up", "-i", "start=[5]", "-i", "steps=[3]", "--url", f"127.0.0.1:{served.http}"
        )
        assert over_http.returncode == 2
        assert "streaming (decoupled) model" in over_http.stderr and "grpc://" in over_http.stderr


def test_check_start_serves_a_test_request() -> None:
    result = run_cli("check", "--start", "--json", *_ports())
    assert result.returncode == 0, result.stdout + result.stderr
    findings = {f["name"]: f for f in json.loads(result.stdout)}
    assert findings["start"]["status"] == "ok", findings["start"]


def test_check_start_reports_a_server_that_cannot_start(tmp_path: pathlib.Path) -> None:
    env_run = subprocess.run(
        [*CLI, "check", "--start", "--json", *_ports()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTRITON_TRITON_CONFIG_MODEL_REPOSITORY": str(tmp_path / "missing")},
    )
    assert env_run.returncode == 1, env_run.stdout + env_run.stderr
    start = next(f for f in json.loads(env_run.stdout) if f["name"] == "start")
    assert start["status"] == "fail" and "tritonserver" in start["detail"], start
    assert start["fix"]


def test_serve_the_repository_example(tmp_path: pathlib.Path) -> None:
    """`pytriton-torch serve examples/model_repository`, checked by the example's own client."""
    with serve(
        [str(EXAMPLES / "model_repository")],
        tmp_path / "serve.log",
        ("addsub_torchscript", "model_directory"),
    ) as served:
        client = run_client(EXAMPLES / "model_repository" / "client.py", f"127.0.0.1:{served.http}")
        assert client.returncode == 0, client.stdout + client.stderr
        assert "OK" in client.stdout.splitlines()
