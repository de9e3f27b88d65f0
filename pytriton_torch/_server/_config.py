"""``TritonConfig``: the tritonserver options users set, with environment-variable overrides."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import types
import typing
from typing import Any

from ..exceptions import PyTritonTorchValidationError

ENV_PREFIXES = ("PYTRITON_TORCH_CONFIG_", "PYTRITON_TRITON_CONFIG_")


@dataclasses.dataclass
class TritonConfig:
    """Options of the tritonserver process started by :class:`~pytriton_torch.triton.Triton`.

    Every field left ``None`` takes tritonserver's default, except the listen addresses, which
    default to ``127.0.0.1`` (set ``"0.0.0.0"`` to listen on all interfaces). Each field can also be
    set with an environment variable ``PYTRITON_TRITON_CONFIG_<FIELD>`` (PyTriton's name) or
    ``PYTRITON_TORCH_CONFIG_<FIELD>``; values given in code win.

    Example::

        TritonConfig(http_port=8015, grpc_port=8016, metrics_port=8017, log_verbose=1)

    Args:
        id: Server identifier.
        model_repository: Extra model repository served beside the bound models.
        log_verbose: Verbose log level of tritonserver (0 = off).
        log_file: Write tritonserver's log to this file.
        exit_timeout_secs: Grace period for in-flight requests at shutdown.
        exit_on_error: Exit if a model fails to load at start.
        strict_readiness: Ready only when every model is ready.
        allow_http: HTTP endpoint options, with ``http_address``, ``http_port``,
            ``http_header_forward_pattern``, ``http_thread_count`` and ``http_restricted_api``.
        allow_grpc: gRPC endpoint options, with ``grpc_address``, ``grpc_port``,
            ``grpc_header_forward_pattern`` and the other ``grpc_*`` fields.
        allow_metrics: Prometheus metrics options, with ``allow_gpu_metrics``, ``allow_cpu_metrics``,
            ``metrics_interval_ms``, ``metrics_port``, ``metrics_address`` and ``metrics_config``.
        allow_sagemaker: Open tritonserver's SageMaker endpoint, with ``sagemaker_port``,
            ``sagemaker_safe_port_range`` (``"<low>-<high>"``: the ports other endpoints may use)
            and ``sagemaker_thread_count``. It listens on every interface and its multi-model API
            loads models without a token, so starting it needs ``PYTRITON_TORCH_ALLOW_SAGEMAKER=1``.
        allow_vertex_ai: Open tritonserver's Vertex AI endpoint, with ``vertex_ai_port``,
            ``vertex_ai_thread_count`` and ``vertex_ai_default_model`` (the model that requests
            naming none go to). Refused at start: tritonserver needs the default model loaded
            when it starts, and bound models load after.
        trace_config: ``--trace-config`` entries.
        cache_config: ``--cache-config`` entries, e.g. ``["local,size=1048576"]``.
        response_cache_byte_size: Shortcut for a local response cache of that many bytes.
        cache_directory: Folder of cache implementations.
        buffer_manager_thread_count: Threads used for copies.
        startup_timeout_s: How long to wait for the server to become live.
    """

    id: str | None = None
    model_repository: pathlib.Path | None = None
    log_verbose: int | None = None
    log_file: pathlib.Path | None = None
    exit_timeout_secs: int | None = None
    exit_on_error: bool | None = None
    strict_readiness: bool | None = None
    allow_http: bool | None = None
    http_address: str | None = None
    http_port: int | None = None
    http_header_forward_pattern: str | None = None
    http_thread_count: int | None = None
    http_restricted_api: str | None = None
    allow_grpc: bool | None = None
    grpc_address: str | None = None
    grpc_port: int | None = None
    grpc_header_forward_pattern: str | None = None
    grpc_infer_allocation_pool_size: int | None = None
    grpc_use_ssl: bool | None = None
    grpc_use_ssl_mutual: bool | None = None
    grpc_server_cert: pathlib.Path | None = None
    grpc_server_key: pathlib.Path | None = None
    grpc_root_cert: pathlib.Path | None = None
    grpc_infer_response_compression_level: str | None = None
    grpc_keepalive_time: int | None = None
    grpc_keepalive_timeout: int | None = None
    grpc_keepalive_permit_without_calls: bool | None = None
    grpc_http2_max_pings_without_data: int | None = None
    grpc_http2_min_recv_ping_interval_without_data: int | None = None
    grpc_http2_max_ping_strikes: int | None = None
    grpc_restricted_protocol: str | None = None
    allow_metrics: bool | None = None
    allow_gpu_metrics: bool | None = None
    allow_cpu_metrics: bool | None = None
    metrics_interval_ms: int | None = None
    metrics_port: int | None = None
    metrics_address: str | None = None
    metrics_config: list[str] | None = None
    allow_sagemaker: bool | None = None
    sagemaker_port: int | None = None
    sagemaker_safe_port_range: str | None = None
    sagemaker_thread_count: int | None = None
    allow_vertex_ai: bool | None = None
    vertex_ai_port: int | None = None
    vertex_ai_thread_count: int | None = None
    vertex_ai_default_model: str | None = None
    trace_config: list[str] | None = None
    cache_config: list[str] | None = None
    response_cache_byte_size: int | None = None
    cache_directory: pathlib.Path | None = None
    buffer_manager_thread_count: int | None = None
    startup_timeout_s: float | None = None

    # Fields that are ours, not tritonserver flags.
    _NOT_FLAGS: typing.ClassVar[frozenset[str]] = frozenset({"response_cache_byte_size", "startup_timeout_s"})

    @classmethod
    def from_env(cls, environ: typing.Mapping[str, str] | None = None) -> TritonConfig:
        """Build a config from ``PYTRITON_TRITON_CONFIG_*`` / ``PYTRITON_TORCH_CONFIG_*`` variables."""
        environ = os.environ if environ is None else environ
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            for prefix in ENV_PREFIXES:
                raw = environ.get(prefix + field.name.upper())
                if raw is not None:
                    values[field.name] = _parse(field.name, raw, hints[field.name])
                    break
        return cls(**values)

    def merged_over(self, base: TritonConfig) -> TritonConfig:
        """This config with ``None`` fields taken from ``base``."""
        given = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }
        return dataclasses.replace(base, **given)

    @property
    def effective_http_address(self) -> str:
        return self.http_address or "127.0.0.1"

    @property
    def effective_grpc_address(self) -> str:
        return self.grpc_address or "127.0.0.1"

    @property
    def effective_metrics_address(self) -> str:
        return self.metrics_address or self.effective_http_address

    @property
    def effective_http_port(self) -> int:
        return 8000 if self.http_port is None else self.http_port

    @property
    def effective_grpc_port(self) -> int:
        return 8001 if self.grpc_port is None else self.grpc_port

    @property
    def effective_metrics_port(self) -> int:
        return 8002 if self.metrics_port is None else self.metrics_port

    def ports(self) -> dict[str, tuple[str, int]]:
        """Endpoint -> (address, port) for every endpoint the server will open."""
        out: dict[str, tuple[str, int]] = {}
        if self.allow_http is not False:
            out["http"] = (self.effective_http_address, self.effective_http_port)
        if self.allow_grpc is not False:
            out["grpc"] = (self.effective_grpc_address, self.effective_grpc_port)
        if self.allow_metrics is not False:
            out["metrics"] = (self.effective_metrics_address, self.effective_metrics_port)
        # tritonserver 2.51 has no address flag for these two: they listen on every interface.
        if self.allow_sagemaker:
            out["sagemaker"] = ("0.0.0.0", 8080 if self.sagemaker_port is None else self.sagemaker_port)
        if self.allow_vertex_ai:
            out["vertex_ai"] = ("0.0.0.0", 8080 if self.vertex_ai_port is None else self.vertex_ai_port)
        return out

    def flags(self) -> dict[str, str]:
        """Field name -> tritonserver flag, for the fields set here that are tritonserver flags."""
        return {
            f.name: _flag(f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None and f.name not in self._NOT_FLAGS
        }

    def check_supported(self, server_flags: typing.Collection[str]) -> None:
        """Raise naming every field set here whose flag the tritonserver binary does not have."""
        missing = {name: flag for name, flag in self.flags().items() if flag not in server_flags}
        if missing:
            raise PyTritonTorchValidationError(
                "this tritonserver build does not support "
                + ", ".join(f"TritonConfig.{name} ({flag})" for name, flag in sorted(missing.items()))
                + "; leave these fields unset or use a tritonserver that has the flags"
            )

    def to_args(self) -> list[str]:
        """Tritonserver command-line flags for the fields that are set."""
        args: list[str] = []
        values = dataclasses.asdict(self)
        values["http_address"] = self.effective_http_address
        values["grpc_address"] = self.effective_grpc_address
        values["metrics_address"] = self.effective_metrics_address
        if self.response_cache_byte_size is not None:
            values["cache_config"] = [
                *(self.cache_config or []),
                f"local,size={self.response_cache_byte_size}",
            ]
        for name, value in values.items():
            if value is None or name in self._NOT_FLAGS or name == "model_repository":
                continue
            if name == "metrics_address" and self.allow_metrics is False:
                continue
            flag = _flag(name)
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, bool):
                    item = "true" if item else "false"
                args.append(f"{flag}={item}")
        return args


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse(name: str, raw: str, hint: Any) -> Any:
    """Convert an environment string to the field's type."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    target = args[0] if args else hint
    try:
        if target is bool:
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if target is int:
            return int(raw)
        if target is float:
            return float(raw)
        if target is pathlib.Path:
            return pathlib.Path(raw)
        if typing.get_origin(target) is list or isinstance(target, types.GenericAlias):
            return [item for item in raw.split(";") if item]
        return raw
    except ValueError:
        raise PyTritonTorchValidationError(
            f"environment variable for TritonConfig.{name} has value {raw!r}; expected {target.__name__}"
        ) from None
