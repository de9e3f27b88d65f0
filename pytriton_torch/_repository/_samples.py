"""A repository model's ``model_warmup``: Triton's samples as :class:`ModelWarmup`, files from ``warmup/``.

The samples run in this process before Triton is asked to load the model, through the same code
as bound models' samples (pytriton_torch/_warmup.py); the config Triton gets has no
``model_warmup``, so a failing sample can never reach Triton's own warm-up clean-up (which
crashes tritonserver 2.51). As in Triton, ``dims`` are the config input's dims (without the batch
axis) and an input with ``reshape`` gets its data reshaped, and ``input_data_file`` names a file in
the model folder's ``warmup/`` sub-folder; absolute names, ``..`` and symlinks that lead out of
the model folder are refused.
"""

from __future__ import annotations

import math
import os
import pathlib

from tritonclient.grpc import model_config_pb2 as pb

from .._dtypes import normalize_spec_dtype
from .._warmup import ReadFile
from ..exceptions import PyTritonTorchModelError
from ..model_config import ModelWarmup, WarmupInput
from ._config import check_inside

WARMUP_FOLDER = "warmup"


def warmup_samples(config: pb.ModelConfig) -> list[ModelWarmup]:
    """The config's ``model_warmup`` entries; a malformed entry fails naming the sample and input."""
    declared = {tensor.name: tensor for tensor in config.input}
    samples: list[ModelWarmup] = []
    for sample in config.model_warmup:
        inputs: dict[str, WarmupInput] = {}
        for name, entry in sorted(sample.inputs.items()):
            where = f"model {config.name!r}: warm-up sample {sample.name!r} input {name!r}"
            which = entry.WhichOneof("input_data_type")
            if which is None:
                raise PyTritonTorchModelError(
                    f"{where} sets no input data; expected one of zero_data, random_data or input_data_file"
                )
            if entry.data_type == pb.TYPE_INVALID:
                raise PyTritonTorchModelError(f"{where} has no data_type")
            dims = tuple(int(d) for d in entry.dims)
            tensor = declared.get(name)
            if tensor is not None and tensor.HasField("reshape"):
                dims = _reshaped(dims, tuple(tensor.dims), tuple(tensor.reshape.shape), where)
            inputs[name] = WarmupInput(
                dtype=normalize_spec_dtype(pb.DataType.Name(entry.data_type), what=where),
                shape=dims,
                zero_data=which == "zero_data",
                random_data=which == "random_data",
                input_data_file=entry.input_data_file if which == "input_data_file" else None,
            )
        samples.append(
            ModelWarmup(name=sample.name, batch_size=sample.batch_size, inputs=inputs, count=sample.count)
        )
    return samples


def _reshaped(
    dims: tuple[int, ...], config_dims: tuple[int, ...], target: tuple[int, ...], where: str
) -> tuple[int, ...]:
    """The sample's dims after the input's ``reshape`` (Triton hands the model reshaped tensors)."""
    variable = [d for d, c in zip(dims, config_dims, strict=False) if c == -1]
    if len(dims) == len(config_dims) and len(variable) == target.count(-1):
        values = iter(variable)
        shape = tuple(next(values) if d == -1 else d for d in target)
        if math.prod(shape) == math.prod(dims):
            return shape
    raise PyTritonTorchModelError(
        f"{where} has dims {list(dims)}, which do not fit the input's dims {list(config_dims)} "
        f"and reshape {list(target)}"
    )


def warmup_file_reader(folder: pathlib.Path, model: str) -> ReadFile:
    """Reads ``input_data_file`` names from ``<folder>/warmup/`` (never from outside ``folder``)."""

    def read(name: str) -> bytes:
        if not name or os.path.isabs(name) or ".." in pathlib.PurePath(name).parts:
            raise PyTritonTorchModelError(
                f"expected a file name inside the model's {WARMUP_FOLDER}/ folder (no '..', not "
                "absolute); refused"
            )
        path = folder / WARMUP_FOLDER / name
        try:
            resolved = check_inside(folder, path, model)
        except PyTritonTorchModelError as exc:  # the caller names the model
            raise PyTritonTorchModelError(exc.message.removeprefix(f"model {model!r}: ")) from None
        if not resolved.is_file():
            raise PyTritonTorchModelError(f"no file {path}")
        try:
            return resolved.read_bytes()
        except OSError as exc:
            raise PyTritonTorchModelError(f"cannot read {path}: {exc.strerror or exc}") from None

    return read
