"""The ``parameters`` of a repository model: upstream boolean parsing and the torch settings.

TorchScript models (libtorch backend) honour the parameters of the upstream table; they are
applied around each execution of that model only. Thread-local switches (optimized execution,
inference mode) need nothing more. Process-wide switches (cuDNN, JIT profiling mode and executor,
TensorExpr fuser) go through :class:`_GlobalGate`: executions that want the same values run
together, others wait until they are done, and the process values come back when the last one
leaves. Once a model that sets one of them is loaded, every repository model's execution passes
the gate, so none runs under another model's values.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from tritonclient.grpc import model_config_pb2 as pb

from ..exceptions import PyTritonTorchModelError

LOGGER = logging.getLogger("pytriton_torch.repository")

_TRUE = ("true", "on", "1")
_FALSE = ("false", "off", "0")
_threads_set_by: dict[str, str] = {}

GlobalValues = tuple[bool | None, bool | None, bool | None, bool | None]


class _GlobalGate:
    """Lets executions in only while the process-wide switches hold the values they want."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._current: GlobalValues | None = None
        self._saved: tuple[bool, bool, bool, bool] | None = None
        self._active = 0
        self._waiting: collections.Counter[GlobalValues] = collections.Counter()
        self.in_use = False  # set once a model that changes a switch is loaded

    def _may_enter(self, wanted: GlobalValues) -> bool:
        if not self._active:
            return True
        # Join the running group only if nobody waits for other values (no starving them).
        others = sum(count for values, count in self._waiting.items() if values != wanted)
        return self._current == wanted and not others

    @contextlib.contextmanager
    def hold(self, wanted: GlobalValues) -> Iterator[None]:
        with self._cond:
            if not self._may_enter(wanted):
                self._waiting[wanted] += 1
                while not self._may_enter(wanted):
                    self._cond.wait()
                self._waiting[wanted] -= 1
                if not self._waiting[wanted]:
                    del self._waiting[wanted]
            if not self._active:
                self._saved = _read_globals()
                _write_globals(wanted)
                self._current = wanted
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if not self._active:
                    assert self._saved is not None
                    _restore_globals(self._saved)
                    self._current = None
                    self._cond.notify_all()


GATE = _GlobalGate()


def parse_bool(value: str) -> bool:
    """Upstream boolean parsing: true/on/1 and false/off/0 in any case; anything else fails."""
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise PyTritonTorchModelError(f"failed to convert '{value}' to boolean")


def string_parameters(config: pb.ModelConfig) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def _bool(params: Mapping[str, str], key: str, model: str) -> bool | None:
    if key not in params:
        return None
    try:
        return parse_bool(params[key])
    except PyTritonTorchModelError as exc:
        raise PyTritonTorchModelError(f"model {model!r}: parameter {key}: {exc.message}") from None


def _count(params: Mapping[str, str], key: str, model: str) -> int | None:
    if key not in params:
        return None
    try:
        value = int(params[key])
    except ValueError:
        raise PyTritonTorchModelError(
            f"model {model!r}: parameter {key}: failed to convert '{params[key]}' to an integer"
        ) from None
    return value if value > 0 else None


@dataclasses.dataclass(frozen=True)
class TorchSettings:
    """Per-model torch settings, from the config's parameters.

    ``None`` means "not set: leave torch's process setting as it is".
    """

    model: str
    optimized_execution: bool = True
    inference_mode: bool = True
    cudnn: bool | None = None
    jit_profiling: bool | None = None
    jit_executor: bool | None = None
    tensor_fuser: bool | None = None
    weight_sharing: bool = True
    cache_cleaning: bool = False
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    method: str = "forward"
    compile_options: dict[str, Any] | None = None

    @property
    def global_values(self) -> GlobalValues:
        return (self.cudnn, self.jit_profiling, self.jit_executor, self.tensor_fuser)

    @property
    def changes_globals(self) -> bool:
        return any(v is not None for v in self.global_values)

    def describe(self) -> str:
        """One line naming the settings in effect (logged once per instance)."""

        def state(value: bool | None) -> str:
            return "default" if value is None else ("enabled" if value else "disabled")

        parts = [
            f"optimized execution {state(self.optimized_execution)}",
            f"inference mode {state(self.inference_mode)}",
            f"cuDNN {state(self.cudnn)}",
            f"JIT profiling {state(self.jit_profiling)}",
            f"JIT executor {state(self.jit_executor)}",
            f"tensor fuser {state(self.tensor_fuser)}",
            f"weight sharing {state(self.weight_sharing)}",
            f"cache cleaning {state(self.cache_cleaning)}",
            f"intra-op threads {self.intra_op_threads or 'default'}",
            f"inter-op threads {self.inter_op_threads or 'default'}",
        ]
        if self.method != "forward":
            parts.append(f"method {self.method}")
        if self.compile_options is not None:
            parts.append(f"torch.compile {self.compile_options}")
        return ", ".join(parts)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Run one execution of this model under its settings (restored afterwards)."""
        with contextlib.ExitStack() as stack:
            if GATE.in_use:
                stack.enter_context(GATE.hold(self.global_values))
            stack.enter_context(torch.jit.optimized_execution(self.optimized_execution))  # type: ignore[attr-defined]
            stack.enter_context(torch.inference_mode(self.inference_mode))
            stack.enter_context(torch.no_grad())  # after: inference_mode(False) turns grad mode back on
            yield

    def snapshot(self) -> dict[str, Any]:
        """The torch settings in force right now (what an execution under :meth:`applied` sees)."""
        return {
            "optimized_execution": bool(torch._C._get_graph_executor_optimize()),
            "inference_mode": torch.is_inference_mode_enabled(),
            "grad_enabled": torch.is_grad_enabled(),
            "cudnn": bool(torch.backends.cudnn.enabled),
            "jit_profiling": _jit_profiling_mode(),
            "jit_executor": _jit_profiling_executor(),
            "tensor_fuser": bool(torch._C._jit_texpr_fuser_enabled()),
            "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(),
        }


def _jit_profiling_mode() -> bool:
    previous = bool(torch._C._jit_set_profiling_mode(True))
    torch._C._jit_set_profiling_mode(previous)
    return previous


def _jit_profiling_executor() -> bool:
    previous = bool(torch._C._jit_set_profiling_executor(True))
    torch._C._jit_set_profiling_executor(previous)
    return previous


def _read_globals() -> tuple[bool, bool, bool, bool]:
    return (
        bool(torch.backends.cudnn.enabled),
        _jit_profiling_mode(),
        _jit_profiling_executor(),
        bool(torch._C._jit_texpr_fuser_enabled()),
    )


def _restore_globals(saved: tuple[bool, bool, bool, bool]) -> None:
    cudnn, profiling, executor, fuser = saved
    torch.backends.cudnn.enabled = cudnn
    torch._C._jit_set_profiling_mode(profiling)
    torch._C._jit_set_profiling_executor(executor)
    torch._C._jit_set_texpr_fuser_enabled(fuser)


def _write_globals(values: GlobalValues) -> None:
    cudnn, profiling, executor, fuser = values
    if cudnn is not None:
        torch.backends.cudnn.enabled = cudnn
    if profiling is not None:
        torch._C._jit_set_profiling_mode(profiling)
    if executor is not None:
        torch._C._jit_set_profiling_executor(executor)
    if fuser is not None:
        torch._C._jit_set_texpr_fuser_enabled(fuser)


TORCHSCRIPT_KEYS = frozenset(
    {
        "DISABLE_OPTIMIZED_EXECUTION",
        "INFERENCE_MODE",
        "DISABLE_CUDNN",
        "ENABLE_JIT_PROFILING",
        "ENABLE_JIT_EXECUTOR",
        "ENABLE_TENSOR_FUSER",
        "ENABLE_NVFUSER",
        "ENABLE_WEIGHT_SHARING",
        "ENABLE_CACHE_CLEANING",
        "INTRA_OP_THREAD_COUNT",
        "INTER_OP_THREAD_COUNT",
        "METHOD",
    }
)
PYTHON_KEYS = frozenset(
    {
        "TORCH_COMPILE_OPTIONAL_PARAMETERS",
        "NUM_THREADS",
        "NUM_INTEROP_THREADS",
        "ENABLE_WEIGHT_SHARING",
        "INFERENCE_MODE",
        "METHOD",
    }
)


def unused_parameters(config: pb.ModelConfig, known: frozenset[str]) -> list[str]:
    """Warnings for parameter keys no loader reads (upstream ignores them silently)."""
    return [
        f"model {config.name!r}: parameter {key!r} is not used by this model's loader "
        f"(known: {', '.join(sorted(known))})"
        for key in sorted(config.parameters)
        if key not in known
    ]


def torchscript_settings(config: pb.ModelConfig) -> TorchSettings:
    """Settings of a TorchScript model from the libtorch backend's parameters."""
    model = config.name
    params = string_parameters(config)
    if _bool(params, "ENABLE_NVFUSER", model) is not None:
        LOGGER.warning(
            "model %r: parameter ENABLE_NVFUSER is accepted but has no effect: PyTorch no longer has nvFuser",
            model,
        )
    disable_optimized = _bool(params, "DISABLE_OPTIMIZED_EXECUTION", model)
    inference = _bool(params, "INFERENCE_MODE", model)
    disable_cudnn = _bool(params, "DISABLE_CUDNN", model)
    sharing = _bool(params, "ENABLE_WEIGHT_SHARING", model)
    cleaning = _bool(params, "ENABLE_CACHE_CLEANING", model)
    settings = TorchSettings(
        model=model,
        optimized_execution=not disable_optimized if disable_optimized is not None else True,
        inference_mode=inference if inference is not None else True,
        cudnn=None if disable_cudnn is None else not disable_cudnn,
        jit_profiling=_bool(params, "ENABLE_JIT_PROFILING", model),
        jit_executor=_bool(params, "ENABLE_JIT_EXECUTOR", model),
        tensor_fuser=_bool(params, "ENABLE_TENSOR_FUSER", model),
        weight_sharing=sharing if sharing is not None else True,
        cache_cleaning=bool(cleaning),
        intra_op_threads=_count(params, "INTRA_OP_THREAD_COUNT", model),
        inter_op_threads=_count(params, "INTER_OP_THREAD_COUNT", model),
        method=params.get("METHOD") or "forward",
    )
    if settings.changes_globals:
        GATE.in_use = True
    return settings


def python_settings(config: pb.ModelConfig) -> TorchSettings:
    """Settings of a Python-runtime model: threads, torch.compile, served method, weight sharing."""
    model = config.name
    params = string_parameters(config)
    compile_options = None
    if "TORCH_COMPILE_OPTIONAL_PARAMETERS" in params:
        try:
            compile_options = json.loads(params["TORCH_COMPILE_OPTIONAL_PARAMETERS"] or "{}")
        except json.JSONDecodeError as exc:
            raise PyTritonTorchModelError(
                f"model {model!r}: parameter TORCH_COMPILE_OPTIONAL_PARAMETERS is not valid JSON: {exc}"
            ) from None
        if not isinstance(compile_options, dict):
            raise PyTritonTorchModelError(
                f"model {model!r}: parameter TORCH_COMPILE_OPTIONAL_PARAMETERS must be a JSON object"
            )
    sharing = _bool(params, "ENABLE_WEIGHT_SHARING", model)
    inference = _bool(params, "INFERENCE_MODE", model)
    return TorchSettings(
        model=model,
        inference_mode=inference if inference is not None else True,
        weight_sharing=sharing if sharing is not None else True,
        intra_op_threads=_count(params, "NUM_THREADS", model),
        inter_op_threads=_count(params, "NUM_INTEROP_THREADS", model),
        method=params.get("METHOD") or "forward",
        compile_options=compile_options,
    )


def apply_thread_counts(settings: TorchSettings) -> None:
    """Set torch's intra/inter-op thread counts; as upstream, the first model that sets one wins."""
    if settings.intra_op_threads is not None:
        owner = _threads_set_by.setdefault("intra", settings.model)
        if owner == settings.model:
            torch.set_num_threads(settings.intra_op_threads)
        else:
            LOGGER.warning(
                "model %r: intra-op thread count already set by model %r; keeping %d",
                settings.model,
                owner,
                torch.get_num_threads(),
            )
    if settings.inter_op_threads is not None:
        owner = _threads_set_by.setdefault("inter", settings.model)
        if owner != settings.model:
            LOGGER.warning(
                "model %r: inter-op thread count already set by model %r; keeping %d",
                settings.model,
                owner,
                torch.get_num_interop_threads(),
            )
            return
        try:
            torch.set_num_interop_threads(settings.inter_op_threads)
        except RuntimeError as exc:  # torch allows it only before any inter-op work started
            LOGGER.warning("model %r: cannot set the inter-op thread count: %s", settings.model, exc)
