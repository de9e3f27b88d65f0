"""How config tensors map to a module's arguments and results (the libtorch backend's conventions).

Inputs, one convention for all of them, tried in this order:

1. a single ``Dict[str, Tensor]`` argument: the config names are the dict's keys;
2. FORWARD_ARGUMENT: every config name is an argument name (passed by keyword);
3. NAMED_INDEX: every name is ``<anything>__<digits>`` and the digits are the position;
4. STRICT_CONFIG_ORDERING: the config's order.

Outputs: a dict result is read by key (beyond upstream); a Tensor is one output; a tuple or list
holds several (a ``List[str]`` is one TYPE_STRING output). Config names ``<anything>__<i>`` pick
result ``i``, other names take the results in config order.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tritonclient.grpc import model_config_pb2 as pb

from .._dtypes import config_type, triton_of_torch
from ..exceptions import PyTritonTorchInferenceError, PyTritonTorchModelError

_NAMED_INDEX = re.compile(r"^.+__(\d+)$")

# The datatypes the libtorch backend serves (TYPE_STRING: List[str]); the dtype table is _dtypes.
LIBTORCH_TYPES = frozenset(
    config_type(name)
    for name in ("BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BF16", "BYTES")
)


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One config input/output: name, ``TYPE_*`` name, dims, optional (inputs)."""

    name: str
    type_name: str
    dims: tuple[int, ...]
    optional: bool = False

    @property
    def is_string(self) -> bool:
        return self.type_name == "TYPE_STRING"


def tensor_specs(config: pb.ModelConfig) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Config inputs and outputs; unsupported datatypes fail with the upstream message."""
    model = config.name
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    for kind, tensors, out in (("input", config.input, inputs), ("output", config.output, outputs)):
        for tensor in tensors:
            type_name = pb.DataType.Name(tensor.data_type)
            if type_name not in LIBTORCH_TYPES:
                raise PyTritonTorchModelError(
                    f"unsupported datatype {type_name} for {kind} '{tensor.name}' for model '{model}'"
                )
            dims = tuple(tensor.reshape.shape) if tensor.HasField("reshape") else tuple(tensor.dims)
            out.append(TensorSpec(tensor.name, type_name, dims, optional=getattr(tensor, "optional", False)))
    if not outputs:
        raise PyTritonTorchModelError(f"model {model!r}: config.pbtxt declares no output")
    return inputs, outputs


def type_name_of(tensor: torch.Tensor) -> str:
    name = triton_of_torch(tensor.dtype)
    return config_type(name) if name is not None else f"TYPE_{str(tensor.dtype).removeprefix('torch.').upper()}"


@dataclasses.dataclass(frozen=True)
class InputPlan:
    """How to call the module: ``dict`` (one Dict argument), ``keyword`` or ``positional``."""

    mode: str
    order: tuple[str, ...]  # config names, in argument order (positional) or config order
    convention: str

    def call(self, fn: Any, values: Mapping[str, Any]) -> Any:
        if self.mode == "dict":
            return fn({name: values[name] for name in self.order if values.get(name) is not None})
        if self.mode == "keyword":
            return fn(**{name: values[name] for name in self.order if values.get(name) is not None})
        return fn(*(values.get(name) for name in self.order))


@dataclasses.dataclass(frozen=True)
class Signature:
    """What is known of the served method's parameters (``self`` excluded)."""

    names: tuple[str, ...] | None  # None: unknown (e.g. a compiled artifact)
    required: int
    single_dict: bool = False


def input_plan(model: str, inputs: Sequence[TensorSpec], signature: Signature) -> InputPlan:
    """Choose the input convention; a wrong input count fails with the upstream message."""
    names = [spec.name for spec in inputs]
    if signature.single_dict:
        return InputPlan("dict", tuple(names), "DICT")
    if signature.names is not None:
        total = len(signature.names)
        if not signature.required <= len(names) <= total:
            provides = total if signature.required == total else f"{signature.required} to {total}"
            raise PyTritonTorchModelError(
                f"unable to load model '{model}', configuration expects {len(names)} inputs, "
                f"model provides {provides}"
            )
        if names and all(name in signature.names for name in names):
            uncovered = [arg for arg in signature.names[: signature.required] if arg not in names]
            if uncovered:
                raise PyTritonTorchModelError(
                    f"model {model!r}: the served method needs argument(s) {', '.join(uncovered)} "
                    "but the configuration has no input of that name"
                )
            leading = signature.names[: len(names)]
            if set(leading) == set(names):  # positional: exported programs take no keywords
                return InputPlan("positional", tuple(leading), "FORWARD_ARGUMENT")
            return InputPlan("keyword", tuple(names), "FORWARD_ARGUMENT")
    indexes = [_NAMED_INDEX.match(name) for name in names]
    if names and all(indexes):
        positions = {int(m.group(1)): name for m, name in zip(indexes, names, strict=True) if m}
        if len(positions) != len(names) or sorted(positions) != list(range(len(names))):
            raise PyTritonTorchModelError(
                f"model {model!r}: input names {names} use the <name>__<index> convention but their "
                f"indexes are not 0..{len(names) - 1} without repeats"
            )
        return InputPlan("positional", tuple(positions[i] for i in range(len(names))), "NAMED_INDEX")
    return InputPlan("positional", tuple(names), "STRICT_CONFIG_ORDERING")


def torchscript_signature(method: Any) -> Signature:
    """Parameters of a TorchScript method from its schema."""
    arguments = list(method.schema.arguments)[1:]  # skip self
    names = tuple(a.name for a in arguments)
    required = sum(1 for a in arguments if not a.has_default_value())
    single_dict = len(arguments) == 1 and str(arguments[0].type).startswith("Dict[")
    return Signature(names, required, single_dict)


def python_signature(method: Any) -> Signature:
    """Parameters of a Python method (bound: ``self`` already excluded)."""
    import inspect

    try:
        params = list(inspect.signature(method).parameters.values())
    except (TypeError, ValueError):
        return Signature(None, 0)
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return Signature(None, 0)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = sum(1 for p in positional if p.default is p.empty)
    single_dict = False
    if len(positional) == 1:
        annotation = str(positional[0].annotation)
        single_dict = annotation.startswith(("dict[", "Dict[", "typing.Dict[")) or "Mapping[" in annotation
    return Signature(tuple(p.name for p in positional), required, single_dict)


def map_outputs(model: str, result: Any, outputs: Sequence[TensorSpec]) -> dict[str, Any]:
    """Config output name -> Tensor or ``list[str]``, checked against the config's datatypes."""
    if isinstance(result, Mapping):
        values: dict[str, Any] = {}
        for spec in outputs:
            if spec.name not in result:
                raise PyTritonTorchInferenceError(
                    f"model {model!r}: output '{spec.name}' is not a key of the dict the model returned "
                    f"(keys: {', '.join(map(str, result))})"
                )
            values[spec.name] = result[spec.name]
    else:
        if isinstance(result, torch.Tensor) or _is_string_list(result):
            items: list[Any] = [result]
        elif isinstance(result, list | tuple):
            items = list(result)
        else:
            raise PyTritonTorchInferenceError(
                f"model {model!r} returned {type(result).__name__}; expected a Tensor, a tuple or list of "
                "Tensors / List[str], or a dict"
            )
        indexes = [_NAMED_INDEX.match(spec.name) for spec in outputs]
        by_index = all(indexes)
        values = {}
        for position, (spec, match) in enumerate(zip(outputs, indexes, strict=True)):
            index = int(match.group(1)) if by_index and match else position
            if index >= len(items):
                raise PyTritonTorchInferenceError(
                    f"The output {spec.name} in the model configuration refers to an output index which "
                    f"doesn't exist. This model has {len(items)} outputs"
                )
            values[spec.name] = items[index]
    for spec in outputs:
        _check_output(model, spec, values[spec.name])
    return values


def _is_string_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _check_output(model: str, spec: TensorSpec, value: Any) -> None:
    if spec.is_string:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return
        provides = type_name_of(value) if isinstance(value, torch.Tensor) else type(value).__name__
    elif isinstance(value, torch.Tensor):
        if value.dim() == 0:
            raise PyTritonTorchInferenceError(f"output '{spec.name}' is a scalar which is not supported.")
        provides = type_name_of(value)
        if provides == spec.type_name:
            return
    else:
        provides = "TYPE_STRING" if isinstance(value, list) else type(value).__name__
    raise PyTritonTorchInferenceError(
        f"configuration expects datatype {spec.type_name} for output '{spec.name}', model provides {provides}"
    )
