"""Turn a binding (ModelConfig + Tensor specs + instance count) into Triton's ``config.pbtxt``.

The config is built as Triton's own ``ModelConfig`` protobuf (shipped in tritonclient) and
written with ``text_format``, so every field name and enum is checked by protobuf itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from ._dtypes import config_type, spec_to_triton
from .exceptions import PyTritonTorchValidationError
from .model_config import DeviceKind, ModelConfig, QueuePolicy, Tensor


def _data_type(tensor: Tensor) -> int:
    name = spec_to_triton(tensor.dtype, what=f"tensor {tensor.name!r}")
    return int(pb.DataType.Value(config_type(name)))


def _queue_policy(policy: QueuePolicy, out: pb.ModelQueuePolicy) -> None:
    out.timeout_action = pb.ModelQueuePolicy.TimeoutAction.Value(policy.timeout_action.value)
    out.default_timeout_microseconds = policy.default_timeout_microseconds
    out.allow_timeout_override = policy.allow_timeout_override
    out.max_queue_size = policy.max_queue_size


def _check_names(model_name: str, kind: str, tensors: Sequence[Tensor]) -> None:
    seen: set[str] = set()
    for tensor in tensors:
        if not tensor.name:
            raise PyTritonTorchValidationError(f"model {model_name!r}: every {kind} Tensor needs a name")
        if tensor.name in seen:
            raise PyTritonTorchValidationError(
                f"model {model_name!r}: {kind} name {tensor.name!r} is repeated"
            )
        seen.add(tensor.name)
    if kind == "output" and any(t.optional for t in tensors):
        raise PyTritonTorchValidationError(f"model {model_name!r}: outputs cannot be optional")


def build_model_config(
    model_name: str,
    inputs: Sequence[Tensor],
    outputs: Sequence[Tensor],
    config: ModelConfig,
    *,
    instance_count: int,
    device_kind: DeviceKind = DeviceKind.KIND_CPU,
    parameters: Mapping[str, str] | None = None,
    backend: str = "python",
) -> pb.ModelConfig:
    """Triton's ModelConfig protobuf for a bound model served by ``backend`` (Python backend by default)."""
    _check_names(model_name, "input", inputs)
    _check_names(model_name, "output", outputs)
    if not outputs:
        raise PyTritonTorchValidationError(f"model {model_name!r}: at least one output must be declared")
    out = pb.ModelConfig(name=model_name, backend=backend)
    out.max_batch_size = config.max_batch_size if config.batching else 0
    for tensor in inputs:
        out.input.add(
            name=tensor.name, data_type=_data_type(tensor), dims=list(tensor.shape), optional=tensor.optional
        )
    for tensor in outputs:
        out.output.add(name=tensor.name, data_type=_data_type(tensor), dims=list(tensor.shape))
    out.instance_group.add(
        name=model_name, count=instance_count, kind=pb.ModelInstanceGroup.Kind.Value(device_kind.value)
    )
    if config.batching:
        batcher = config.batcher
        dyn = out.dynamic_batching
        dyn.max_queue_delay_microseconds = batcher.max_queue_delay_microseconds
        dyn.preferred_batch_size.extend(batcher.preferred_batch_size or [])
        dyn.preserve_ordering = batcher.preserve_ordering
        dyn.priority_levels = batcher.priority_levels
        dyn.default_priority_level = batcher.default_priority_level
        if batcher.default_queue_policy is not None:
            _queue_policy(batcher.default_queue_policy, dyn.default_queue_policy)
        for level, policy in (batcher.priority_queue_policy or {}).items():
            _queue_policy(policy, dyn.priority_queue_policy[level])
    if config.decoupled:
        out.model_transaction_policy.decoupled = True
    if config.response_cache:
        out.response_cache.enable = True
    for warmup in config.model_warmup or []:
        entry = out.model_warmup.add(name=warmup.name, batch_size=warmup.batch_size, count=warmup.count)
        for input_name, spec in warmup.inputs.items():
            entry.inputs[input_name].data_type = _data_type(
                Tensor(name=input_name, dtype=spec.dtype, shape=(1,))
            )
            entry.inputs[input_name].dims.extend(spec.shape)
            if spec.random_data:
                entry.inputs[input_name].random_data = True
            elif spec.input_data_file:
                entry.inputs[input_name].input_data_file = spec.input_data_file
            else:
                entry.inputs[input_name].zero_data = True
    for key, value in {**config.parameters, **(parameters or {})}.items():
        out.parameters[key].string_value = str(value)
    return out


def to_pbtxt(config: pb.ModelConfig) -> str:
    """The text form Triton reads from ``config.pbtxt``."""
    return str(text_format.MessageToString(config))
