"""Unit tests of pytriton_torch._server._config (TritonConfig) and _process.check_ports_free."""

from __future__ import annotations

import dataclasses
import pathlib
import socket
from collections.abc import Iterator

import pytest

from pytriton_torch._server._config import TritonConfig
from pytriton_torch._server._dist import find_dist
from pytriton_torch._server._process import TritonProcess, check_ports_free
from pytriton_torch._server._support import check_startable, server_flags
from pytriton_torch.exceptions import PyTritonTorchPortInUseError, PyTritonTorchValidationError

DEFAULT_ADDRESSES = ["--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"]


@pytest.mark.parametrize("prefix", ["PYTRITON_TRITON_CONFIG_", "PYTRITON_TORCH_CONFIG_"])
def test_from_env_both_prefixes(prefix: str) -> None:
    config = TritonConfig.from_env({prefix + "HTTP_PORT": "8123", prefix + "ID": "srv"})
    assert config.http_port == 8123
    assert config.id == "srv"
    assert config.grpc_port is None


def test_from_env_torch_prefix_wins_over_triton_prefix() -> None:
    env = {"PYTRITON_TRITON_CONFIG_GRPC_PORT": "1111", "PYTRITON_TORCH_CONFIG_GRPC_PORT": "2222"}
    assert TritonConfig.from_env(env).grpc_port == 2222


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTRITON_TRITON_CONFIG_LOG_VERBOSE", "3")
    assert TritonConfig.from_env().log_verbose == 3


def test_from_env_empty() -> None:
    assert TritonConfig.from_env({}) == TritonConfig()


def test_from_env_ignores_unrelated_and_lowercase() -> None:
    env = {"PYTRITON_TRITON_CONFIG_http_port": "1", "HTTP_PORT": "2", "PYTRITON_TRITON_CONFIG_NOPE": "3"}
    assert TritonConfig.from_env(env) == TritonConfig()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        (" yes ", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("False", False),
        ("no", False),
        ("off", False),
    ],
)
def test_from_env_bool(raw: str, expected: bool) -> None:
    assert TritonConfig.from_env({"PYTRITON_TRITON_CONFIG_ALLOW_GRPC": raw}).allow_grpc is expected


def test_from_env_int_float_path_list() -> None:
    config = TritonConfig.from_env(
        {
            "PYTRITON_TRITON_CONFIG_EXIT_TIMEOUT_SECS": "15",
            "PYTRITON_TORCH_CONFIG_STARTUP_TIMEOUT_S": "2.5",
            "PYTRITON_TRITON_CONFIG_LOG_FILE": "/tmp/triton.log",
            "PYTRITON_TRITON_CONFIG_MODEL_REPOSITORY": "models",
            "PYTRITON_TRITON_CONFIG_CACHE_CONFIG": "local,size=1024;redis,host=x;",
            "PYTRITON_TRITON_CONFIG_METRICS_CONFIG": "summary_latencies=true",
        }
    )
    assert config.exit_timeout_secs == 15
    assert isinstance(config.exit_timeout_secs, int)
    assert config.startup_timeout_s == 2.5
    assert config.log_file == pathlib.Path("/tmp/triton.log")
    assert isinstance(config.log_file, pathlib.Path)
    assert config.model_repository == pathlib.Path("models")
    assert config.cache_config == ["local,size=1024", "redis,host=x"]
    assert config.metrics_config == ["summary_latencies=true"]


@pytest.mark.parametrize(
    ("field", "raw", "type_name"),
    [
        ("HTTP_PORT", "eighty", "int"),
        ("ALLOW_HTTP", "maybe", "bool"),
        ("STARTUP_TIMEOUT_S", "soon", "float"),
        ("LOG_VERBOSE", "1.5", "int"),
    ],
)
def test_from_env_bad_value_names_field(field: str, raw: str, type_name: str) -> None:
    with pytest.raises(PyTritonTorchValidationError) as info:
        TritonConfig.from_env({"PYTRITON_TRITON_CONFIG_" + field: raw})
    message = str(info.value)
    assert f"TritonConfig.{field.lower()}" in message
    assert repr(raw) in message
    assert f"expected {type_name}" in message


def test_merged_over_code_wins() -> None:
    env = TritonConfig.from_env(
        {
            "PYTRITON_TRITON_CONFIG_HTTP_PORT": "9000",
            "PYTRITON_TRITON_CONFIG_GRPC_PORT": "9001",
            "PYTRITON_TRITON_CONFIG_ALLOW_METRICS": "true",
        }
    )
    code = TritonConfig(http_port=8500, allow_metrics=False)
    merged = code.merged_over(env)
    assert merged.http_port == 8500
    assert merged.grpc_port == 9001
    assert merged.allow_metrics is False
    # Neither input is modified.
    assert env.http_port == 9000
    assert code.grpc_port is None


def test_to_args_defaults() -> None:
    assert TritonConfig().to_args() == DEFAULT_ADDRESSES


def test_to_args_flags() -> None:
    args = TritonConfig(
        id="s1",
        log_verbose=2,
        exit_on_error=True,
        strict_readiness=False,
        http_port=8010,
        grpc_address="0.0.0.0",
        log_file=pathlib.Path("/tmp/t.log"),
        trace_config=["mode=triton", "rate=100"],
    ).to_args()
    assert "--id=s1" in args
    assert "--log-verbose=2" in args
    assert "--exit-on-error=true" in args
    assert "--strict-readiness=false" in args
    assert "--http-port=8010" in args
    assert "--grpc-address=0.0.0.0" in args
    assert "--log-file=/tmp/t.log" in args
    assert [a for a in args if a.startswith("--trace-config")] == [
        "--trace-config=mode=triton",
        "--trace-config=rate=100",
    ]
    assert not any("True" in a or "False" in a for a in args)


def test_to_args_skips_own_fields() -> None:
    args = TritonConfig(model_repository=pathlib.Path("/m"), startup_timeout_s=5.0).to_args()
    assert args == DEFAULT_ADDRESSES


def test_to_args_metrics_address_defaults_to_http_address() -> None:
    args = TritonConfig(http_address="0.0.0.0").to_args()
    assert "--metrics-address=0.0.0.0" in args
    args = TritonConfig(http_address="0.0.0.0", metrics_address="10.0.0.1").to_args()
    assert "--metrics-address=10.0.0.1" in args


def test_to_args_metrics_address_omitted_when_metrics_disabled() -> None:
    args = TritonConfig(allow_metrics=False, metrics_address="10.0.0.1").to_args()
    assert "--allow-metrics=false" in args
    assert not any(a.startswith("--metrics-address") for a in args)


def test_to_args_response_cache_byte_size() -> None:
    assert "--cache-config=local,size=4096" in TritonConfig(response_cache_byte_size=4096).to_args()
    args = TritonConfig(cache_config=["redis,host=h"], response_cache_byte_size=10).to_args()
    assert [a for a in args if a.startswith("--cache-config")] == [
        "--cache-config=redis,host=h",
        "--cache-config=local,size=10",
    ]
    assert not any("response-cache-byte-size" in a for a in args)


def test_to_args_does_not_mutate_cache_config() -> None:
    config = TritonConfig(cache_config=["a"], response_cache_byte_size=1)
    config.to_args()
    assert config.cache_config == ["a"]


def test_ports_defaults() -> None:
    assert TritonConfig().ports() == {
        "http": ("127.0.0.1", 8000),
        "grpc": ("127.0.0.1", 8001),
        "metrics": ("127.0.0.1", 8002),
    }


def test_ports_custom_and_disabled() -> None:
    config = TritonConfig(http_address="0.0.0.0", http_port=1, grpc_port=2, metrics_port=3, allow_grpc=False)
    assert config.ports() == {"http": ("0.0.0.0", 1), "metrics": ("0.0.0.0", 3)}
    config = TritonConfig(allow_http=False, allow_metrics=False, grpc_port=0)
    assert config.ports() == {"grpc": ("127.0.0.1", 0)}


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_check_ports_free_passes_on_free_ports() -> None:
    check_ports_free({"http": ("127.0.0.1", free_port()), "grpc": ("127.0.0.1", free_port())})


def test_check_ports_free_skips_port_zero() -> None:
    # 192.0.2.1 (TEST-NET-1) is not a local address: probing it would fail, so port 0 must not be probed.
    check_ports_free({"http": ("192.0.2.1", 0)})
    with pytest.raises(PyTritonTorchPortInUseError, match=r"http port 1234 on 192\.0\.2\.1"):
        check_ports_free({"http": ("192.0.2.1", 1234)})


def test_check_ports_free_reports_listening_port(listener: int) -> None:
    with pytest.raises(PyTritonTorchPortInUseError) as info:
        check_ports_free({"http": ("127.0.0.1", free_port()), "grpc": ("127.0.0.1", listener)})
    message = str(info.value)
    assert f"grpc port {listener} on 127.0.0.1" in message
    assert "http port" not in message
    assert message.startswith("cannot start tritonserver")


def test_check_ports_free_reports_every_busy_port(listener: int) -> None:
    with pytest.raises(PyTritonTorchPortInUseError) as info:
        check_ports_free({"http": ("127.0.0.1", listener), "metrics": ("0.0.0.0", listener)})
    message = str(info.value)
    assert f"http port {listener} on 127.0.0.1" in message
    assert f"metrics port {listener} on 0.0.0.0" in message


def test_check_ports_free_leaves_port_usable() -> None:
    port = free_port()
    check_ports_free({"http": ("127.0.0.1", port)})
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


# -- PyTriton 0.7.0's SageMaker / Vertex AI fields ------------------------------------------------

ENDPOINT_FIELDS = {
    "allow_sagemaker": ("True", True, "--allow-sagemaker=true"),
    "sagemaker_port": ("8090", 8090, "--sagemaker-port=8090"),
    "sagemaker_safe_port_range": ("8000-8100", "8000-8100", "--sagemaker-safe-port-range=8000-8100"),
    "sagemaker_thread_count": ("4", 4, "--sagemaker-thread-count=4"),
    "allow_vertex_ai": ("0", False, "--allow-vertex-ai=false"),
    "vertex_ai_port": ("8091", 8091, "--vertex-ai-port=8091"),
    "vertex_ai_thread_count": ("2", 2, "--vertex-ai-thread-count=2"),
    "vertex_ai_default_model": ("m", "m", "--vertex-ai-default-model=m"),
}


def test_every_pytriton_field_exists() -> None:
    pytriton_triton = pytest.importorskip("pytriton.triton")
    ours = {field.name for field in dataclasses.fields(TritonConfig)}
    theirs = {field.name for field in dataclasses.fields(pytriton_triton.TritonConfig)}
    assert theirs - ours == set()


@pytest.mark.parametrize("field", sorted(ENDPOINT_FIELDS))
def test_endpoint_field_from_env_and_to_args(field: str) -> None:
    raw, value, flag = ENDPOINT_FIELDS[field]
    config = TritonConfig.from_env({"PYTRITON_TRITON_CONFIG_" + field.upper(): raw})
    assert getattr(config, field) == value
    assert flag in config.to_args()
    assert TritonConfig(**{field: value}).to_args() == [*DEFAULT_ADDRESSES, flag]  # type: ignore[arg-type]


def test_ports_include_sagemaker_and_vertex_ai_on_every_interface() -> None:
    assert "sagemaker" not in TritonConfig(sagemaker_port=1).ports()
    ports = TritonConfig(allow_sagemaker=True, allow_vertex_ai=True, vertex_ai_port=9).ports()
    assert ports["sagemaker"] == ("0.0.0.0", 8080)
    assert ports["vertex_ai"] == ("0.0.0.0", 9)


def test_check_ports_free_sees_busy_sagemaker_port(listener: int) -> None:
    config = TritonConfig(http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
    config = dataclasses.replace(config, allow_sagemaker=True, sagemaker_port=listener)
    with pytest.raises(PyTritonTorchPortInUseError, match=f"sagemaker port {listener}"):
        check_ports_free(config.ports())


def test_check_supported_names_missing_fields() -> None:
    config = TritonConfig(allow_vertex_ai=True, vertex_ai_port=1, http_port=2)
    with pytest.raises(PyTritonTorchValidationError) as caught:
        config.check_supported({"--http-port", "--http-address"})
    assert "TritonConfig.allow_vertex_ai (--allow-vertex-ai)" in str(caught.value)
    assert "TritonConfig.vertex_ai_port (--vertex-ai-port)" in str(caught.value)
    assert "http_port" not in str(caught.value)
    TritonConfig(http_port=2, startup_timeout_s=1.0).check_supported({"--http-port"})


def test_wheel_tritonserver_has_every_pytriton_flag() -> None:
    pytriton_triton = pytest.importorskip("pytriton.triton")
    dist = find_dist()
    flags = server_flags(dist, TritonProcess.environment(dist))
    every = {field.name: True for field in dataclasses.fields(pytriton_triton.TritonConfig)}
    TritonConfig(**every).check_supported(flags)  # type: ignore[arg-type]


def test_check_startable_refuses_vertex_ai_with_reason() -> None:
    with pytest.raises(PyTritonTorchValidationError, match=r"allow_vertex_ai.*default model loaded"):
        check_startable(TritonConfig(allow_vertex_ai=True), frozenset())
    check_startable(TritonConfig(allow_vertex_ai=False, vertex_ai_port=1), frozenset())


def test_check_startable_wants_an_opt_in_for_sagemaker() -> None:
    config = TritonConfig(allow_sagemaker=True, sagemaker_port=8099)
    with pytest.raises(PyTritonTorchValidationError, match=r"allow_sagemaker.*port 8099.*any folder"):
        check_startable(config, frozenset(), {})
    with pytest.raises(PyTritonTorchValidationError, match="PYTRITON_TORCH_ALLOW_SAGEMAKER=1"):
        check_startable(config, frozenset(), {"PYTRITON_TORCH_ALLOW_SAGEMAKER": "yes"})
    check_startable(config, frozenset(), {"PYTRITON_TORCH_ALLOW_SAGEMAKER": "1"})
    check_startable(TritonConfig(allow_sagemaker=False), frozenset(), {})
