"""Security defaults: loopback listening, restricted admin APIs, private workspace, sockets and shm."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pathlib
import re
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from pytriton_torch import ModelConfig, Request, Tensor, Triton, TritonConfig
from pytriton_torch.triton import ADMIN_HEADER
from tests.integration.conftest import make_config, shm_entries

F32 = np.float32
GRPC_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"
BIG = 100_000  # floats: 400 KB, so tensors travel through shared memory both ways


def _double(requests: list[Request]) -> list[dict[str, Any]]:
    return [{"y": r["x"] * 2} for r in requests]


@pytest.fixture(scope="module")
def triton() -> Iterator[Triton]:
    with Triton(config=make_config()) as server:
        server.bind(
            "double",
            _double,
            [Tensor(name="x", dtype=F32, shape=(-1,))],
            [Tensor(name="y", dtype=F32, shape=(-1,))],
            config=ModelConfig(max_batch_size=2),
        )
        _infer(server)  # creates the shared-memory segments of both directions
        yield server


def _infer(triton: Triton) -> None:
    client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
    x = np.ones((1, BIG), dtype=F32)
    item = httpclient.InferInput("x", list(x.shape), "FP32")
    item.set_data_from_numpy(x)
    assert np.array_equal(client.infer("double", [item]).as_numpy("y"), x * 2)


def _http(triton: Triton, method: str, path: str, body: bytes | None, token: str | None = None) -> int:
    headers = {ADMIN_HEADER: token} if token else {}
    request = urllib.request.Request(triton.http_url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


RESTRICTED_HTTP = [
    ("POST", "/v2/repository/index", b"{}"),
    ("POST", "/v2/repository/models/double/unload", b"{}"),
    ("GET", "/v2/systemsharedmemory/status", None),
    ("POST", "/v2/systemsharedmemory/region/r/register", b'{"key": "/r", "offset": 0, "byte_size": 8}'),
    ("GET", "/v2/cudasharedmemory/status", None),
    ("GET", "/v2/logging", None),
    ("POST", "/v2/logging", b'{"log_verbose_level": 1}'),
    ("GET", "/v2/trace/setting", None),
    ("POST", "/v2/trace/setting", b'{"trace_level": ["TIMESTAMPS"]}'),
]


@pytest.mark.parametrize(("method", "path", "body"), RESTRICTED_HTTP, ids=[f"{m} {p}" for m, p, _ in RESTRICTED_HTTP])
def test_admin_http_endpoints_need_the_token(triton: Triton, method: str, path: str, body: bytes | None) -> None:
    assert _http(triton, method, path, body) == 403
    assert _http(triton, method, path, body, token="wrong") == 403
    _infer(triton)  # still serving


def test_the_token_opens_the_admin_endpoints(triton: Triton) -> None:
    assert _http(triton, "GET", "/v2/logging", None, token=triton._token) == 200
    assert _http(triton, "GET", "/v2/systemsharedmemory/status", None, token=triton._token) == 200
    assert _http(triton, "POST", "/v2/repository/index", b"{}", token=triton._token) == 200


def test_admin_grpc_calls_need_the_token(triton: Triton) -> None:
    client = grpcclient.InferenceServerClient(triton.grpc_url.removeprefix("grpc://"))
    calls = {
        "repository index": client.get_model_repository_index,
        "load": lambda **kw: client.load_model("double", **kw),
        "shm status": client.get_system_shared_memory_status,
        "shm register": lambda **kw: client.register_system_shared_memory("r", "/r", 8, **kw),
        "log settings": client.get_log_settings,
        "update log settings": lambda **kw: client.update_log_settings({"log_verbose_level": 1}, **kw),
        "trace settings": client.get_trace_settings,
    }
    for name, call in calls.items():
        with pytest.raises(InferenceServerException, match="This protocol is restricted") as info:
            call(headers={GRPC_HEADER: "wrong"}) if name == "load" else call()
        assert info.value.status() == "StatusCode.UNAVAILABLE", name
    # Triton prefixes the gRPC header key with "triton-grpc-protocol-".
    assert client.get_model_repository_index(headers={GRPC_HEADER: triton._token}) is not None
    assert client.get_log_settings(headers={GRPC_HEADER: triton._token}) is not None
    _infer(triton)


def test_a_configured_rule_replaces_the_default_for_the_apis_it_names() -> None:
    rule = "model-repository,shared-memory:my-key=my-secret"
    with Triton(config=make_config(http_restricted_api=rule)) as server:
        # bind loads through the repository API: pytriton_torch passes the user's header too
        server.bind(
            "double",
            _double,
            [Tensor(name="x", dtype=F32, shape=(-1,))],
            [Tensor(name="y", dtype=F32, shape=(-1,))],
            config=ModelConfig(max_batch_size=2),
        )
        _infer(server)

        def status(method: str, path: str, headers: dict[str, str]) -> int:
            request = urllib.request.Request(
                server.http_url + path, data=b"{}" if method == "POST" else None, method=method, headers=headers
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        mine, ours = {"my-key": "my-secret"}, {ADMIN_HEADER: server._token}
        assert status("GET", "/v2/systemsharedmemory/status", {}) == 403
        assert status("GET", "/v2/systemsharedmemory/status", ours) == 403
        assert status("GET", "/v2/systemsharedmemory/status", mine) == 200
        assert status("POST", "/v2/repository/index", ours) == 403
        assert status("POST", "/v2/repository/index", mine) == 200
        # the APIs the rule does not name keep the default restriction
        assert status("GET", "/v2/logging", mine) == 403
        assert status("GET", "/v2/logging", ours) == 200


def test_inference_health_metadata_and_metrics_stay_open(triton: Triton) -> None:
    http = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
    assert http.is_server_live() and http.is_server_ready() and http.is_model_ready("double")
    assert http.get_server_metadata()["name"] == "triton"
    assert http.get_model_metadata("double")["name"] == "double"
    assert http.get_model_config("double")["name"] == "double"
    assert http.get_inference_statistics("double")["model_stats"]
    grpc = grpcclient.InferenceServerClient(triton.grpc_url.removeprefix("grpc://"))
    assert grpc.is_server_live() and grpc.get_model_metadata("double").name == "double"
    with urllib.request.urlopen(triton.metrics_url, timeout=30) as response:
        assert b"nv_inference_request_success" in response.read()
    _infer(triton)


def test_listens_on_loopback_only_by_default(triton: Triton) -> None:
    assert triton._process is not None and triton._process.pid is not None
    listening = [
        c.laddr for c in psutil.Process(triton._process.pid).net_connections() if c.status == "LISTEN"
    ]
    ports = {triton.config.effective_http_port, triton.config.effective_grpc_port, triton.config.effective_metrics_port}
    assert {addr.port for addr in listening} == ports
    assert all(addr.ip in ("127.0.0.1", "::ffff:127.0.0.1") for addr in listening), listening


def test_other_addresses_only_when_configured() -> None:
    assert "--http-address=0.0.0.0" in TritonConfig(http_address="0.0.0.0").to_args()
    assert "--grpc-address=127.0.0.1" in TritonConfig(http_address="0.0.0.0").to_args()


def test_workspace_sockets_and_shared_memory_are_private(triton: Triton) -> None:
    workspace = triton.workspace
    assert workspace is not None
    assert stat.S_IMODE(workspace.root.stat().st_mode) == 0o700
    sockets = [p for p in workspace.ipc.iterdir() if stat.S_ISSOCK(p.stat().st_mode)]
    assert sockets and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in sockets)
    segments = shm_entries(triton._shm_prefix)
    # ours (request and response) and Triton's Python-backend region of the stub
    assert any(s.endswith("-req-1") for s in segments) and any(s.endswith("-rsp-1") for s in segments)
    assert any("-tb" in s for s in segments), segments
    for name in segments:
        assert stat.S_IMODE((pathlib.Path("/dev/shm") / name).stat().st_mode) == 0o600, name


def test_names_are_unguessable(triton: Triton) -> None:
    # ptt-<pid>-<64 random bits>; the workspace comes from mkdtemp (random suffix, 0700)
    assert re.fullmatch(rf"ptt-{os.getpid()}-[0-9a-f]{{16}}", triton._shm_prefix)
    other = Triton(config=make_config())
    assert other._shm_prefix != triton._shm_prefix and other._token != triton._token
    assert len(triton._token) == 32
    assert triton.workspace is not None and triton.workspace.root.name.startswith("pytriton_torch-")


def _as_other_user(checks: dict[str, Any]) -> dict[str, int]:
    """Run each check in a forked child that switched to uid/gid 65534; returns errno per check (0 = allowed)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: only system calls, then _exit
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            codes = []
            for check in checks.values():
                try:
                    check()
                    codes.append(0)
                except OSError as exc:
                    codes.append(exc.errno or -1)
            os.write(write_fd, ",".join(map(str, codes)).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        raw = pipe.read().decode()
    os.waitpid(pid, 0)
    return dict(zip(checks, map(int, raw.split(",")), strict=True))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another uid")
def test_another_local_user_cannot_reach_the_channel(triton: Triton) -> None:
    import socket

    workspace = triton.workspace
    assert workspace is not None
    sock_path = str(next(workspace.ipc.iterdir()))
    segments = [pathlib.Path("/dev/shm") / name for name in shm_entries(triton._shm_prefix)]
    with tempfile.NamedTemporaryFile(dir="/dev/shm", prefix="ptt-control-") as control:
        os.chmod(control.name, 0o644)

        def connect() -> None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(sock_path)

        checks: dict[str, Any] = {
            "control: a world-readable file": lambda: os.close(os.open(control.name, os.O_RDONLY)),
            "connect to the worker socket": connect,
            "list the workspace": lambda: os.listdir(workspace.root),
        }
        for segment in segments:
            checks[f"read {segment.name}"] = lambda s=segment: os.close(os.open(s, os.O_RDONLY))
        results = _as_other_user(checks)
    assert results.pop("control: a world-readable file") == 0
    assert results and all(code == errno.EACCES for code in results.values()), results
    _infer(triton)


# -- another local user, as the attack was done ----------------------------------------------------

ATTACKER = pathlib.Path(__file__).with_name("attacker.py")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another uid")


def _server_of(triton: Triton) -> psutil.Process:
    """The tritonserver child of this process that serves ``triton`` (found by its HTTP port)."""
    port = f"--http-port={triton.config.effective_http_port}"
    for proc in psutil.Process().children(recursive=True):
        if port in proc.cmdline():
            return proc
    raise AssertionError(f"no tritonserver with {port}")


def _shm_prefix_of(server: psutil.Process) -> str:
    """The server's private shared-memory prefix, as its command line shows it."""
    flag = "--backend-config=python,shm-region-prefix-name="
    value = next(arg for arg in server.cmdline() if arg.startswith(flag))[len(flag) :]
    assert value.endswith("-tb")
    return value.removesuffix("-tb")


@needs_root
def test_another_user_reading_proc_cannot_use_any_restricted_api(triton: Triton) -> None:
    server = _server_of(triton)
    done = subprocess.run(
        [sys.executable, str(ATTACKER), "admin", triton.http_url, triton.grpc_url, "double"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["uid"] == 65534
    # it did see our server's restriction rules, and tried what they show
    assert any(rule.startswith("--http-restricted-api=") for rule in report["rules"]), report["rules"]
    assert report["candidates"] and report["tried"] > 18
    assert server.pid not in report["environ_readable"]
    assert report["allowed"] == [], report["allowed"][:20]
    # nothing secret anywhere the attacker could read: not in the server's nor a stub's command line
    for proc in [server, *server.children(recursive=True)]:
        assert not re.search(r"[0-9a-f]{32}", " ".join(proc.cmdline())), proc.cmdline()
    # the owner's own admin still works: a model bound after start loads
    triton.bind(
        "after_attack",
        _double,
        [Tensor(name="x", dtype=F32, shape=(-1,))],
        [Tensor(name="y", dtype=F32, shape=(-1,))],
        config=ModelConfig(max_batch_size=2),
    )
    client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
    assert client.is_model_ready("after_attack") and client.is_model_ready("double")
    _infer(triton)


def test_a_user_given_rule_value_stays_off_the_command_line() -> None:
    rule = "shared-memory:my-key=my-secret-value"
    with Triton(config=make_config(grpc_restricted_protocol=rule)) as server:
        cmdline = _server_of(server).cmdline()
        assert "my-secret-value" not in " ".join(cmdline)
        shown = next(arg for arg in cmdline if arg.startswith("--grpc-restricted-protocol=shared-memory:my-key="))
        grpc = grpcclient.InferenceServerClient(server.grpc_url.removeprefix("grpc://"))
        with pytest.raises(InferenceServerException, match="restricted"):
            grpc.get_system_shared_memory_status()
        with pytest.raises(InferenceServerException, match="restricted"):  # what the command line shows
            grpc.get_system_shared_memory_status(headers={"triton-grpc-protocol-my-key": shown.split("=", 2)[2]})
        assert grpc.get_system_shared_memory_status(headers={"triton-grpc-protocol-my-key": "my-secret-value"}) is not None


def test_model_config_shows_no_internal_parameter(triton: Triton) -> None:
    assert triton.workspace is not None
    http = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://")).get_model_config("double")
    grpc = grpcclient.InferenceServerClient(triton.grpc_url.removeprefix("grpc://")).get_model_config(
        "double", as_json=True
    )["config"]
    for config in (http, grpc):
        text = json.dumps(config)
        assert not [key for key in config.get("parameters", {}) if key.startswith("pytriton_torch")], text
        assert str(triton.workspace.root) not in text and "/ipc" not in text
        assert "ptt-" not in text  # the shared-memory prefix
        values = [p.get("string_value") for p in config.get("parameters", {}).values()]
        assert str(os.getpid()) not in values and str(_server_of(triton).pid) not in values


@needs_root
def test_python_backend_regions_are_private_from_the_moment_they_exist() -> None:
    with Triton(config=make_config()) as server:
        prefix = _shm_prefix_of(_server_of(server))
        attacker = subprocess.Popen(
            [sys.executable, str(ATTACKER), "shm"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert attacker.stdout is not None and attacker.stdin is not None
        first_modes: dict[str, int] = {}
        watching = threading.Event()
        try:
            assert attacker.stdout.readline().strip() == "READY", attacker.stderr.read() if attacker.stderr else ""
            watching.set()

            def watch() -> None:  # the owner's view: each entry's mode when first seen
                while watching.is_set():
                    with os.scandir("/dev/shm") as entries:
                        for entry in entries:
                            if entry.name.startswith(prefix) and entry.name not in first_modes:
                                with contextlib.suppress(FileNotFoundError):
                                    first_modes[entry.name] = stat.S_IMODE(entry.stat().st_mode)
                    time.sleep(0.001)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            server.bind(
                "double",
                [_double, _double],  # two stubs: two Python-backend regions
                [Tensor(name="x", dtype=F32, shape=(-1,))],
                [Tensor(name="y", dtype=F32, shape=(-1,))],
                config=ModelConfig(max_batch_size=2),
            )
            _infer(server)  # our own request and response segments too
        finally:
            watching.clear()
            out, err = attacker.communicate(input="stop\n", timeout=60)
        report = json.loads(out.splitlines()[-1]) if out.strip() else {}
        assert attacker.returncode == 0 and report.get("uid") == 65534, err[-3000:]
        ours = {name: code for name, code in report["opened"].items() if name.startswith(prefix)}
        assert len([name for name in ours if "-tb" in name]) >= 2, ours  # it saw both stubs' regions
        assert all(code == errno.EACCES for code in ours.values()), ours
        assert [name for name in first_modes if "-tb" in name], first_modes
        assert all(mode == 0o600 for mode in first_modes.values()), {n: oct(m) for n, m in first_modes.items()}
