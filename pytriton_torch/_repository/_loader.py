"""Load a Triton model repository of PyTorch models into a running (or not yet started) Triton."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from tritonclient.grpc import model_config_pb2 as pb

from ..exceptions import PyTritonTorchError, PyTritonTorchModelError, PyTritonTorchValidationError
from ._bound import RepositoryModel
from ._config import ModelKind, ParsedConfig, model_file, parse_config, select_versions
from ._conventions import TensorSpec, input_plan, tensor_specs
from ._loaders import Loaded, is_torchscript, load_pt2, load_python, load_torchscript
from ._params import (
    PYTHON_KEYS,
    TORCHSCRIPT_KEYS,
    TorchSettings,
    apply_thread_counts,
    python_settings,
    torchscript_settings,
    unused_parameters,
)
from ._report import RepositoryReport
from ._runner import RepositoryRunner

if TYPE_CHECKING:
    from ..triton import Triton

LOGGER = logging.getLogger("pytriton_torch.repository")

EventCallback = Callable[[str, str, str], None]


@dataclasses.dataclass
class PreparedModel:
    """A parsed model with its modules loaded: one runner per instance, per version."""

    parsed: ParsedConfig
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    settings: TorchSettings
    runners: dict[int, list[RepositoryRunner]]


def instance_devices(config: pb.ModelConfig) -> list[torch.device]:
    """One torch device per instance, from ``instance_group`` (default: one KIND_AUTO instance).

    KIND_GPU on a machine without CUDA fails (use KIND_AUTO to run on the GPU when there is one).
    """
    name = config.name
    groups = list(config.instance_group) or [pb.ModelInstanceGroup(kind=pb.ModelInstanceGroup.KIND_AUTO)]
    cuda = torch.cuda.is_available()
    visible = list(range(torch.cuda.device_count())) if cuda else []
    devices: list[torch.device] = []
    for group in groups:
        count = group.count if group.count > 0 else 1
        kind = pb.ModelInstanceGroup.Kind.Name(group.kind)
        if kind == "KIND_GPU" and not cuda:
            raise PyTritonTorchModelError(
                f"model {name!r}: instance_group asks for KIND_GPU but CUDA is not available on this "
                "machine; use KIND_AUTO (GPU when present, else CPU) or KIND_CPU"
            )
        if kind in ("KIND_GPU", "KIND_AUTO") and cuda:
            gpus = list(group.gpus) or visible
            for gpu in gpus:
                if gpu not in visible:
                    raise PyTritonTorchModelError(
                        f"model {name!r}: instance_group names GPU {gpu} but the visible GPUs are {visible}"
                    )
                devices += [torch.device(f"cuda:{gpu}")] * count
        elif kind == "KIND_MODEL":
            devices += [torch.device("cuda:0" if cuda else "cpu")] * count
        else:
            devices += [torch.device("cpu")] * count
    return devices


def _settings(parsed: ParsedConfig) -> TorchSettings:
    if parsed.kind is ModelKind.TORCHSCRIPT:
        return torchscript_settings(parsed.config)
    return python_settings(parsed.config)


def _loader(
    parsed: ParsedConfig, version: int, settings: TorchSettings, allow_pickle: bool
) -> Callable[[torch.device], Loaded]:
    """A function that loads this version's model onto a device."""
    name = parsed.config.name
    if parsed.kind is ModelKind.TORCHSCRIPT:
        path = model_file(parsed, version, ["model.pt"])
        if path.suffix == ".pt2":
            return lambda device: load_pt2(name, path, device, settings)
        return lambda device: load_torchscript(name, path, device, settings)
    if parsed.kind is ModelKind.AOTI:
        path = model_file(parsed, version, ["model.pt2"])
        return lambda device: load_pt2(name, path, device, settings)
    path = model_file(parsed, version, ["model.py", "model.pt"])
    if path.suffix == ".pt2":
        return lambda device: load_pt2(name, path, device, settings)
    if path.suffix != ".py":
        return lambda device: load_torchscript(name, path, device, settings)
    weights = _weights_file(parsed, version, path)
    return lambda device: load_python(name, version, path, weights, device, settings, allow_pickle)


def _weights_file(parsed: ParsedConfig, version: int, model_py: pathlib.Path) -> pathlib.Path | None:
    """``model.py.pt`` (seed layout), else ``<stem>.pt`` unless that is a TorchScript model."""
    from ._config import check_inside

    for candidate in (model_py.with_name(model_py.name + ".pt"), model_py.with_suffix(".pt")):
        if candidate.exists() or candidate.is_symlink():
            check_inside(parsed.folder, candidate, parsed.config.name)
            if candidate.name.endswith(".py.pt") or not is_torchscript(candidate):
                return candidate
    return None


def prepare_model(
    folder: pathlib.Path, *, allow_pickle: bool = False, emit: EventCallback | None = None
) -> PreparedModel:
    """Parse, check and load one repository model (every selected version, every instance)."""
    name = folder.name
    parsed = parse_config(folder)
    known = TORCHSCRIPT_KEYS if parsed.kind is ModelKind.TORCHSCRIPT else PYTHON_KEYS
    parsed.warnings += unused_parameters(parsed.config, known)
    for warning in parsed.warnings:
        LOGGER.warning("%s", warning)
        if emit is not None:
            emit(name, "parse", warning)
    config = parsed.config
    inputs, outputs = tensor_specs(config)
    settings = _settings(parsed)
    versions = select_versions(parsed)
    devices = instance_devices(config)
    if emit is not None:
        emit(name, "load", f"{parsed.kind.value}, version(s) {versions}, {len(devices)} instance(s)")
    apply_thread_counts(settings)
    runners: dict[int, list[RepositoryRunner]] = {}
    for version in versions:
        load = _loader(parsed, version, settings, allow_pickle)
        shared: dict[torch.device, Loaded] = {}
        runners[version] = []
        for index, device in enumerate(devices):
            if settings.weight_sharing and device in shared:
                loaded = shared[device]
            else:
                loaded = shared[device] = load(device)
            plan = input_plan(name, inputs, loaded.signature)
            runners[version].append(
                RepositoryRunner(
                    loaded.method,
                    model=name,
                    version=version,
                    instance=index,
                    inputs=inputs,
                    outputs=outputs,
                    plan=plan,
                    device=device,
                    batching=config.max_batch_size > 0,
                    settings=settings,
                    module=loaded.module,
                )
            )
    return PreparedModel(parsed, inputs, outputs, settings, runners)


def load_repository(
    triton: Triton,
    path: str | os.PathLike[str],
    *,
    models: Sequence[str] | None = None,
    on_event: EventCallback | None = None,
    allow_pickle: bool = False,
) -> RepositoryReport:
    """Implementation of :meth:`pytriton_torch.triton.Triton.load_repository`."""
    root = pathlib.Path(path)
    if not root.is_dir():
        raise PyTritonTorchValidationError(f"model repository {str(root)!r} is not a folder")
    report = RepositoryReport()

    def emit(model: str, stage: str, detail: str) -> None:
        if on_event is not None:
            try:
                on_event(model, stage, detail)
            except Exception:  # a progress display must not break loading
                LOGGER.exception("on_event callback failed")

    def fail(model: str, reason: str) -> None:
        if model in report.loaded:
            report.loaded.remove(model)
        reason += _server_detail(triton, model, reason)
        report.failed[model] = reason
        LOGGER.error("%s", reason if f"'{model}'" in reason else f"model {model!r}: {reason}")
        emit(model, "failed", reason)

    available = sorted(
        entry.name
        for entry in root.iterdir()
        if entry.is_dir() and not entry.name.startswith(".") and entry.name != "__pycache__"
    )
    names = list(dict.fromkeys(models)) if models else available
    for name in names:
        if name not in available:
            fail(name, f"model {name!r}: no folder {name!r} in the model repository {root}")
            continue
        emit(name, "parse", f"reading {root / name / 'config.pbtxt'}")
        try:
            prepared = prepare_model(root / name, allow_pickle=allow_pickle, emit=emit)
            model = RepositoryModel(
                prepared.parsed.config,
                prepared.inputs,
                prepared.outputs,
                prepared.runners,
                source=root / name,
                on_load_error=functools.partial(fail, name),
            )
            warmups = len(model.warmups)
            emit(
                name,
                "warmup",
                f"{warmups} model_warmup sample(s) run here on every instance before Triton loads it"
                if warmups
                else "no model_warmup",
            )
            triton._bind_model(model)
        except PyTritonTorchError as exc:
            fail(name, exc.message)
            continue
        except Exception as exc:  # a broken model file must not stop the other models
            fail(name, f"model {name!r}: {type(exc).__name__}: {exc}")
            continue
        report.loaded.append(name)
        emit(name, "ready", "serving" if triton._started else "loads when the server starts")
    return report


def _server_detail(triton: Triton, model: str, reason: str) -> str:
    """Triton's load answer can be vague ("failed to poll"): add its log lines about the model."""
    process = triton._process
    if process is None or "failed to poll" not in reason:
        return ""
    lines = [
        line.split("] ", 1)[-1].strip().strip('"')
        for line in process.logs(last=200).splitlines()
        if line.startswith("E") and f"'{model}'" in line
    ]
    return f" ({'; '.join(dict.fromkeys(lines))})" if lines else ""
