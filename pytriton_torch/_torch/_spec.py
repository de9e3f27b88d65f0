"""Derive a module's input/output Tensor specs from its signature and one example call."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .._dtypes import numpy_of_torch, torch_names
from ..exceptions import PyTritonTorchValidationError
from ..model_config import Tensor


def numpy_dtype(dtype: torch.dtype, what: str) -> Any:
    """Numpy dtype that carries a torch dtype over Triton."""
    numpy_type = numpy_of_torch(dtype)
    if numpy_type is None:
        raise PyTritonTorchValidationError(
            f"{what} has dtype {dtype}, which Triton cannot carry through this server; "
            f"expected one of {', '.join(torch_names())}"
        )
    return numpy_type


def input_names(method: Callable[..., Any], count: int, what: str) -> list[str]:
    """Names of the first ``count`` parameters of ``method`` (``self`` already bound)."""
    try:
        params = list(inspect.signature(method).parameters.values())
    except (TypeError, ValueError):  # TorchScript / C++ methods may have no Python signature
        return [f"INPUT__{i}" for i in range(count)]
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        names += [f"INPUT__{i}" for i in range(len(names), count)]
    if len(names) < count:
        raise PyTritonTorchValidationError(
            f"{what}: {len(names)} positional parameter(s) in its signature but {count} example input(s) were given"
        )
    return names[:count]


def input_specs(
    names: Sequence[str],
    examples: Sequence[torch.Tensor],
    *,
    batching: bool,
    dynamic_axes: Mapping[str, Sequence[int]] | None,
    what: str,
) -> list[Tensor]:
    """Tensor specs from example inputs; with batching, dim 0 of the example is the batch axis."""
    specs = []
    for name, example in zip(names, examples, strict=True):
        if not isinstance(example, torch.Tensor):
            raise PyTritonTorchValidationError(
                f"{what}: example input {name!r} is {type(example).__name__}; expected a torch.Tensor"
            )
        shape = list(example.shape[1:] if batching else example.shape)
        if batching and example.dim() == 0:
            raise PyTritonTorchValidationError(
                f"{what}: example input {name!r} is a scalar; with batching it needs a batch axis (dim 0)"
            )
        for axis in (dynamic_axes or {}).get(name, ()):
            if batching and axis == 0:
                continue  # the batch axis is always variable
            index = axis - 1 if batching else axis
            if not 0 <= index < len(shape):
                raise PyTritonTorchValidationError(
                    f"{what}: dynamic axis {axis} of input {name!r} is out of range for shape {list(example.shape)}"
                )
            shape[index] = -1
        dtype = numpy_dtype(example.dtype, f"{what}: input {name!r}")
        specs.append(Tensor(name=name, dtype=dtype, shape=tuple(shape)))
    return specs


def flatten_outputs(result: Any, what: str) -> dict[str, torch.Tensor]:
    """Name a module's result: a Tensor -> OUTPUT__0, tuple/list -> OUTPUT__i, dict -> its keys."""
    if isinstance(result, torch.Tensor):
        return {"OUTPUT__0": result}
    if isinstance(result, Mapping):
        out = {str(k): v for k, v in result.items()}
    elif isinstance(result, list | tuple):
        out = {f"OUTPUT__{i}": v for i, v in enumerate(result)}
    else:
        raise PyTritonTorchValidationError(
            f"{what} returned {type(result).__name__}; expected a Tensor, a tuple/list of Tensors or a dict of Tensors"
        )
    for name, value in out.items():
        if not isinstance(value, torch.Tensor):
            raise PyTritonTorchValidationError(
                f"{what}: output {name!r} is {type(value).__name__}; expected a torch.Tensor"
            )
    return out


def output_specs(
    outputs: Mapping[str, torch.Tensor], *, batching: bool, dynamic: bool, what: str
) -> list[Tensor]:
    """Tensor specs for named outputs of an example call; ``dynamic`` marks every non-batch dim -1."""
    specs = []
    for name, value in outputs.items():
        shape = tuple(value.shape[1:] if batching else value.shape)
        if not shape:  # Triton needs dims: a scalar (per sample) is served as [1]
            shape = (1,)
        elif dynamic:
            shape = tuple(-1 for _ in shape)
        specs.append(
            Tensor(name=name, dtype=numpy_dtype(value.dtype, f"{what}: output {name!r}"), shape=shape)
        )
    return specs
