"""Read and check a repository model's ``config.pbtxt``; find its version folders and files.

The text is parsed with Triton's own ``ModelConfig`` protobuf (from tritonclient), so a misspelt
field fails with protobuf's message naming it. Fields that this server cannot honour are refused
with a message naming the field; fields with no effect here are reported as warnings.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import pathlib

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from ..exceptions import PyTritonTorchModelError


class ModelKind(enum.Enum):
    """How a repository model is loaded."""

    TORCHSCRIPT = "pytorch_libtorch"  # platform pytorch_libtorch, or backend pytorch
    PYTHON = "pytorch_python"  # backend python + platform pytorch, or backend pytorch + runtime model.py
    AOTI = "torch_aoti"  # platform torch_aoti: model.pt2


# Fields whose meaning this server cannot reproduce: the model is refused.
_UNSUPPORTED = {
    "sequence_batching": "stateful sequence batching",
    "ensemble_scheduling": "ensembles",
    "batch_input": "batch inputs",
    "batch_output": "batch outputs",
    "model_repository_agents": "repository agents",
}
# Fields that have no effect on a model run by torch in this process: loaded with a warning.
_IGNORED = {
    "optimization": "backend accelerators (TensorRT, OpenVINO) do not apply to torch modules",
    "cc_model_filenames": "per-compute-capability files are not used",
    "model_operations": "op libraries are not loaded",
}
_INSTANCE_UNSUPPORTED = ("secondary_devices", "profile", "passive", "host_policy", "rate_limiter")


@dataclasses.dataclass
class ParsedConfig:
    """A checked config: the protobuf, how to load the model, and the warnings found."""

    config: pb.ModelConfig
    kind: ModelKind
    folder: pathlib.Path
    warnings: list[str]


def parse_config(folder: pathlib.Path) -> ParsedConfig:
    """Parse and check ``<folder>/config.pbtxt`` (the model's name is the folder's name)."""
    name = folder.name
    path = folder / "config.pbtxt"
    if not path.is_file():
        raise PyTritonTorchModelError(f"model {name!r}: no config.pbtxt in {folder}")
    check_inside(folder, path, name)
    config = pb.ModelConfig()
    try:
        text_format.Parse(path.read_text(), config)
    except text_format.ParseError as exc:
        raise PyTritonTorchModelError(f"model {name!r}: config.pbtxt: {exc}") from None
    except UnicodeDecodeError:
        raise PyTritonTorchModelError(f"model {name!r}: config.pbtxt is not UTF-8 text") from None
    if config.name and config.name != name:
        raise PyTritonTorchModelError(
            f"model {name!r}: config.pbtxt names the model {config.name!r}; the name must match its folder"
        )
    config.name = name
    warnings = _check_fields(config)
    return ParsedConfig(config=config, kind=model_kind(config), folder=folder, warnings=warnings)


def _check_fields(config: pb.ModelConfig) -> list[str]:
    name = config.name
    for field, what in _UNSUPPORTED.items():
        if _is_set(config, field):
            raise PyTritonTorchModelError(
                f"model {name!r}: config field '{field}' ({what}) is not supported by pytriton-torch"
            )
    for group in config.instance_group:
        for field in _INSTANCE_UNSUPPORTED:
            if _is_set(group, field):
                raise PyTritonTorchModelError(
                    f"model {name!r}: config field 'instance_group.{field}' is not supported by pytriton-torch"
                )
    for tensor in config.input:
        if tensor.is_shape_tensor or tensor.allow_ragged_batch or tensor.is_non_linear_format_io:
            raise PyTritonTorchModelError(
                f"model {name!r}: input {tensor.name!r}: shape tensors, ragged batches and non-linear "
                "formats are not supported by pytriton-torch"
            )
    for tensor in config.output:
        if tensor.is_shape_tensor or tensor.is_non_linear_format_io:
            raise PyTritonTorchModelError(
                f"model {name!r}: output {tensor.name!r}: shape tensors and non-linear formats are not "
                "supported by pytriton-torch"
            )
    return [
        f"model {name!r}: config field '{field}' is ignored: {why}"
        for field, why in _IGNORED.items()
        if _is_set(config, field)
    ]


def _is_set(message: object, field: str) -> bool:
    value = getattr(message, field)
    descriptor = message.DESCRIPTOR.fields_by_name[field]  # type: ignore[attr-defined]
    repeated = getattr(descriptor, "is_repeated", None)
    if repeated is None:  # protobuf before 5.29
        repeated = descriptor.label == descriptor.LABEL_REPEATED
    if repeated:
        return len(value) > 0
    if descriptor.message_type is not None:
        return bool(message.HasField(field))  # type: ignore[attr-defined]
    return bool(value)


def model_kind(config: pb.ModelConfig) -> ModelKind:
    """Which loader serves this config (platform / backend / runtime)."""
    platform, backend, runtime = config.platform, config.backend, config.runtime
    name = config.name
    if platform == "torch_aoti":
        return ModelKind.AOTI
    if backend == "python" and platform == "pytorch":
        return ModelKind.PYTHON
    if backend == "pytorch" and runtime == "model.py":
        return ModelKind.PYTHON
    if platform == "pytorch_libtorch" or (backend == "pytorch" and runtime in ("", "libtorch")):
        if platform not in ("", "pytorch_libtorch"):
            raise PyTritonTorchModelError(
                f"model {name!r}: platform {platform!r} does not match backend 'pytorch'"
            )
        return ModelKind.TORCHSCRIPT
    described = ", ".join(
        f"{key} {value!r}"
        for key, value in (("platform", platform), ("backend", backend), ("runtime", runtime))
        if value
    )
    raise PyTritonTorchModelError(
        f"model {name!r}: {described or 'no platform or backend'} is not served by pytriton-torch; expected "
        "platform 'pytorch_libtorch' (or backend 'pytorch'), backend 'python' with platform 'pytorch', "
        "backend 'pytorch' with runtime 'model.py', or platform 'torch_aoti'"
    )


def check_inside(folder: pathlib.Path, path: pathlib.Path, model: str) -> pathlib.Path:
    """``path`` resolved (symlinks followed); refused when it leaves the model's folder."""
    root = folder.resolve()
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise PyTritonTorchModelError(
            f"model {model!r}: {path} resolves to {resolved}, outside the model folder {root}; refused"
        )
    return resolved


def select_versions(parsed: ParsedConfig) -> list[int]:
    """Version numbers to serve, from the numeric sub-folders and ``version_policy``."""
    name = parsed.config.name
    available = sorted(
        int(entry.name)
        for entry in parsed.folder.iterdir()
        if entry.is_dir() and entry.name.isdigit() and int(entry.name) > 0
    )
    if not available:
        raise PyTritonTorchModelError(
            f"model {name!r}: no version folder (a folder named by a positive number, e.g. '1') in {parsed.folder}"
        )
    policy = parsed.config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return available
    if which == "specific":
        wanted = sorted(set(policy.specific.versions))
        missing = [v for v in wanted if v not in available]
        if missing:
            raise PyTritonTorchModelError(
                f"model {name!r}: version_policy asks for version(s) {missing} but the folder has {available}"
            )
        return wanted
    count = policy.latest.num_versions if which == "latest" else 1
    if count < 1:
        raise PyTritonTorchModelError(f"model {name!r}: version_policy latest.num_versions must be >= 1")
    return available[-count:]


def model_file(parsed: ParsedConfig, version: int, candidates: list[str]) -> pathlib.Path:
    """The model file of ``version``: ``default_model_filename`` if set, else the first candidate found.

    Raises the upstream message ``unable to find '<path>' for model instance '<name>'`` when none exists.
    """
    name = parsed.config.name
    version_dir = parsed.folder / str(version)
    given = parsed.config.default_model_filename
    if given:
        if os.path.isabs(given) or ".." in pathlib.PurePath(given).parts:
            raise PyTritonTorchModelError(
                f"model {name!r}: default_model_filename {given!r} must be a file name inside the version "
                "folder; refused"
            )
        names = [given]
    else:
        names = candidates
    for file_name in names:
        path = version_dir / file_name
        if path.exists() or path.is_symlink():
            check_inside(parsed.folder, path, name)
            if path.is_file():
                return pathlib.Path(path)
    raise PyTritonTorchModelError(f"unable to find '{version_dir / names[0]}' for model instance '{name}'")
