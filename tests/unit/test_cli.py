"""The ``pytriton-torch`` command without a server: argument handling, targets, inputs, checks."""

from __future__ import annotations

import json
import pathlib
import socket

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from pytriton_torch._cli import _check
from pytriton_torch._cli._exit import CliError, ExitCode
from pytriton_torch._cli._infer import InputSpec, parse_inputs, parse_url, to_array, to_json
from pytriton_torch._cli._progress import ModelProgress
from pytriton_torch._cli._serve import build_config
from pytriton_torch._cli._target import BinderTarget, RepositoryTarget, resolve
from pytriton_torch.cli import app
from tests.conftest import free_port

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


# -- command line ---------------------------------------------------------------------------------


def test_help_lists_the_commands() -> None:
    code, output = invoke("--help")
    assert code == 0
    for command in ("serve", "infer", "check"):
        assert command in output


def test_bad_log_level_is_a_usage_error() -> None:
    code, output = invoke("--log-level", "loud", "check")
    assert code == ExitCode.USAGE
    assert "loud" in output


def test_serve_missing_target_is_a_usage_error() -> None:
    code, output = invoke("serve", "no/such/file.py")
    assert code == ExitCode.USAGE
    assert "no/such/file.py: no such file" in output


def test_serve_file_without_bind_models(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "server.py"
    script.write_text("x = 1\n")
    code, output = invoke("serve", str(script))
    assert code == ExitCode.USAGE
    assert "no attribute 'bind_models'" in output


def test_serve_object_that_is_not_callable(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "server.py"
    script.write_text("models = 1\n")
    code, output = invoke("serve", f"{script}:models")
    assert code == ExitCode.USAGE
    assert "is a int, not a callable" in output


def test_serve_module_that_raises_on_import(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text("raise RuntimeError('boom at import')\n")
    code, output = invoke("serve", f"{script}:bind_models")
    assert code == ExitCode.FAILURE
    assert "boom at import" in output


def test_serve_unknown_module() -> None:
    code, output = invoke("serve", "no_such_package_xyz.server:bind")
    assert code == ExitCode.USAGE
    assert "importable module" in output


def test_serve_model_filter_needs_a_repository(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "server.py"
    script.write_text("def bind_models(triton):\n    pass\n")
    code, output = invoke("serve", str(script), "--model", "a")
    assert code == ExitCode.USAGE
    assert "--model selects models of a repository" in output


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("log_verbos=1", "did you mean log_verbose"),
        ("log_verbose=loud", "expected int"),
        ("no-equals-sign", "expected FIELD=VALUE"),
    ],
)
def test_serve_bad_config_setting(tmp_path: pathlib.Path, setting: str, message: str) -> None:
    script = tmp_path / "server.py"
    script.write_text("def bind_models(triton):\n    pass\n")
    code, output = invoke("serve", str(script), "--config", setting)
    assert code == ExitCode.USAGE
    assert message in output


def test_serve_busy_port_exits_4(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "server.py"
    script.write_text("def bind_models(triton):\n    pass\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, output = invoke(
            "serve",
            str(script),
            "--http-port",
            str(port),
            "--grpc-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
        )
    assert code == ExitCode.START_FAILED
    assert f"http port {port}" in output


def test_build_config_maps_options() -> None:
    config = build_config(
        http_port=9000,
        grpc_port=9001,
        metrics_port=None,
        address="0.0.0.0",
        settings=["log_verbose=2", "http-header-forward-pattern=x-.*", "strict_readiness=true"],
    )
    assert (config.http_port, config.grpc_port, config.metrics_port) == (9000, 9001, None)
    assert config.http_address == config.grpc_address == config.metrics_address == "0.0.0.0"
    assert config.log_verbose == 2
    assert config.http_header_forward_pattern == "x-.*"
    assert config.strict_readiness is True


# -- targets --------------------------------------------------------------------------------------


def test_resolve_folder_is_a_repository(tmp_path: pathlib.Path) -> None:
    assert resolve(str(tmp_path)) == RepositoryTarget(tmp_path.resolve())


def test_resolve_file_default_and_named_object(tmp_path: pathlib.Path) -> None:
    (tmp_path / "helper.py").write_text("FACTOR = 3\n")
    script = tmp_path / "server.py"
    script.write_text(
        "from helper import FACTOR\n\ndef bind_models(t):\n    return FACTOR\n\ndef other(t):\n    return 7\n"
    )
    default = resolve(str(script))
    assert isinstance(default, BinderTarget) and default.object_name == "bind_models"
    assert default.binder(None) == 3  # the file's folder is importable, as with `python server.py`
    named = resolve(f"{script}:other")
    assert isinstance(named, BinderTarget) and named.binder(None) == 7


def test_resolve_module_object() -> None:
    target = resolve("json:dumps")
    assert isinstance(target, BinderTarget) and target.binder is json.dumps


def test_resolve_rejects_a_bad_name(tmp_path: pathlib.Path) -> None:
    with pytest.raises(CliError) as info:
        resolve("json:not-a-name")
    assert info.value.code is ExitCode.USAGE


# -- infer helpers --------------------------------------------------------------------------------


def test_parse_url() -> None:
    assert parse_url("localhost:8000") == parse_url("http://localhost:8000")
    assert parse_url("grpc://h:1").protocol == "grpc"
    with pytest.raises(CliError, match="scheme must be"):
        parse_url("ftp://h:1")


def test_parse_inputs_from_files_and_text(tmp_path: pathlib.Path) -> None:
    np.save(tmp_path / "a.npy", np.arange(3, dtype=np.int32))
    (tmp_path / "b.json").write_text("[[1.5, 2.5]]")
    values = parse_inputs([f"a={tmp_path / 'a.npy'}", f"b={tmp_path / 'b.json'}", 'c=["x", "y"]'])
    np.testing.assert_array_equal(values["a"], np.arange(3, dtype=np.int32))
    assert values["b"] == [[1.5, 2.5]]
    assert values["c"] == ["x", "y"]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("a=missing.npy", "no such file 'missing.npy'"),
        ("a=missing.json", "no such file 'missing.json'"),
        ("a=[1, 2", "is not JSON"),
        ("noequals", "expected NAME="),
    ],
)
def test_parse_inputs_errors(item: str, message: str) -> None:
    with pytest.raises(CliError, match=message) as info:
        parse_inputs([item])
    assert info.value.code is ExitCode.USAGE


def test_parse_inputs_rejects_a_corrupt_npy(tmp_path: pathlib.Path) -> None:
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(CliError, match=r"not a readable \.npy"):
        parse_inputs([f"a={tmp_path / 'bad.npy'}"])


def test_to_array_adds_the_batch_axis_and_converts() -> None:
    spec = InputSpec("x", "FP32", (-1, 3))
    array = to_array("m", spec, [1, 2, 3], batching=True)
    assert array.shape == (1, 3) and array.dtype == np.float32
    assert to_array("m", spec, [[1, 2, 3], [4, 5, 6]], batching=True).shape == (2, 3)


def test_to_array_bytes() -> None:
    array = to_array("m", InputSpec("s", "BYTES", (-1, 1)), [["héllo"], [b"\x00raw"]], batching=True)
    assert array.dtype == object
    assert array.tolist() == [["héllo".encode()], [b"\x00raw"]]


def test_to_array_wrong_rank_names_model_and_input() -> None:
    with pytest.raises(CliError, match=r"model 'm' input 'x': expected 2 dimensions") as info:
        to_array("m", InputSpec("x", "FP32", (-1, 3)), [[[1.0]]], batching=True)
    assert info.value.code is ExitCode.USAGE


def test_to_array_unconvertible_value() -> None:
    with pytest.raises(CliError, match="cannot convert the value to INT32"):
        to_array("m", InputSpec("x", "INT32", (-1,)), ["abc"], batching=False)


def test_to_json_decodes_bytes() -> None:
    doc = to_json(
        {"y": np.array([[1, 2]], dtype=np.int64), "s": np.array([[b"ok"], [b"\xff"]], dtype=object)}
    )
    assert doc["y"] == {"datatype": "INT64", "shape": [1, 2], "data": [[1, 2]]}
    assert doc["s"]["data"] == [["ok"], ["\\xff"]]


def test_infer_unreachable_server_exits_1() -> None:
    port = free_port()  # nothing listens there
    code, output = invoke("infer", "m", "-i", "x=[1]", "--url", f"127.0.0.1:{port}", "--timeout", "2")
    assert code == ExitCode.FAILURE
    assert "cannot reach the server" in output


def test_infer_bad_input_file_exits_2() -> None:
    code, output = invoke("infer", "m", "-i", "x=nothing.npy")
    assert code == ExitCode.USAGE
    assert "no such file" in output


# -- check ----------------------------------------------------------------------------------------


def test_check_passes_on_this_machine() -> None:
    code, output = invoke(
        "check",
        "--json",
        "--http-port",
        str(free_port()),
        "--grpc-port",
        str(free_port()),
        "--metrics-port",
        str(free_port()),
    )
    findings = {f["name"]: f for f in json.loads(output)}
    assert code == 0, output
    for name in ("glibc", "libpython", "tritonserver", "stub", "shm", "ports", "torch", "cuda", "preload library"):
        assert findings[name]["status"] in ("ok", "info", "warn"), findings[name]


def test_check_fails_on_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, output = invoke("check", "--http-port", str(port), "--grpc-port", str(free_port()))
    assert code == ExitCode.FAILURE
    assert f"http port {port}" in output
    assert "fix:" in output


def test_check_small_shm_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    class Stats:
        f_blocks, f_frsize, f_bavail = 16, 4 * 1024 * 1024, 16  # 64 MiB, Docker's default

    monkeypatch.setattr(_check.os, "statvfs", lambda path: Stats())
    finding = _check.check_shm()
    assert finding.status == _check.WARN
    assert "--shm-size" in finding.fix


def test_check_preload_library_without_a_compiler(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytriton_torch._server import _preload

    source = tmp_path / "_preload.c"
    source.write_text(_preload.SOURCE.read_text() + "\n/* not built anywhere */\n")
    monkeypatch.setattr(_preload, "SOURCE", source)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    finding = _check.check_preload()
    assert finding.status == _check.FAIL
    assert "pytriton-torch build" in finding.fix and "gcc" in finding.fix


def test_check_old_or_missing_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_check.os, "confstr", lambda name: "glibc 2.31")
    assert _check.check_glibc().status == _check.FAIL
    monkeypatch.setattr(_check.os, "confstr", lambda name: "")
    assert "not a glibc system" in _check.check_glibc().detail


def test_a_crashing_check_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> _check.Finding:
        raise OSError("kaput")

    monkeypatch.setattr(_check, "check_torch", broken)
    findings = _check.run_checks({})
    assert any(f.status == _check.FAIL and "kaput" in f.detail for f in findings)


# -- progress -------------------------------------------------------------------------------------


def test_model_progress_records_outcomes() -> None:
    console = Console(record=True, width=120, force_terminal=True)  # live spinners
    with ModelProgress(console) as progress:
        progress.event("a", "parse", "config.pbtxt")
        progress.event("a", "load", "")
        progress.event("a", "ready", "")
        progress.event("b", "failed", "weights [missing]")
    assert progress.ready == ["a"]
    assert progress.failed == {"b": "weights [missing]"}
    assert "weights [missing]" in console.export_text()


def test_configuration_doc_lists_every_triton_config_field() -> None:
    """`--config FIELD=VALUE` points users to docs/configuration.md: every field must be there."""
    import dataclasses

    from pytriton_torch import TritonConfig

    text = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    missing = [f.name for f in dataclasses.fields(TritonConfig) if f"`{f.name}`" not in text]
    assert not missing, f"docs/configuration.md does not describe {missing}"


def test_cli_doc_lists_every_exit_code() -> None:
    text = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    table = text[text.index("## Exit codes") :]
    for code in ExitCode:
        assert f"\n| {int(code)} |" in table, f"exit code {int(code)} ({code.name}) is not documented"


def test_model_progress_in_a_log_prints_one_line_per_event() -> None:
    console = Console(record=True, width=120, force_terminal=False)
    with ModelProgress(console) as progress:
        progress.event("a", "load", "2 instance(s)")
        progress.event("a", "warmup", "")
        progress.event("a", "ready", "")
    lines = [line for line in console.export_text().splitlines() if line.strip()]
    assert lines[0].startswith("a: loading 2 instance(s) (")
    assert lines[1].startswith("a: warming up (") and lines[2].startswith("a: ready (")


def test_check_start_is_not_tried_after_a_failure() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, output = invoke("check", "--start", "--json", "--http-port", str(port))
    assert code == ExitCode.FAILURE
    start = next(f for f in json.loads(output) if f["name"] == "start")
    assert start["status"] == "info" and "not tried" in start["detail"]
