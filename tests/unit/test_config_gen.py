"""Unit tests of pytriton_torch._config_gen: the generated Triton ModelConfig protobuf."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from pytriton_torch._config_gen import build_model_config, to_pbtxt
from pytriton_torch.exceptions import PyTritonTorchValidationError
from pytriton_torch.model_config import (
    DeviceKind,
    DynamicBatcher,
    ModelConfig,
    ModelWarmup,
    QueuePolicy,
    Tensor,
    TimeoutAction,
    WarmupInput,
)

X = Tensor(name="x", dtype=np.float32, shape=(-1,))
Y = Tensor(name="y", dtype=np.float32, shape=(-1,))


def build(
    inputs: list[Tensor] | None = None,
    outputs: list[Tensor] | None = None,
    config: ModelConfig | None = None,
    **kwargs: Any,
) -> pb.ModelConfig:
    kwargs.setdefault("instance_count", 1)
    return build_model_config(
        "m",
        [X] if inputs is None else inputs,
        [Y] if outputs is None else outputs,
        ModelConfig() if config is None else config,
        **kwargs,
    )


def round_trip(config: pb.ModelConfig) -> pb.ModelConfig:
    return text_format.Parse(to_pbtxt(config), pb.ModelConfig())


def test_basic_fields() -> None:
    out = build(config=ModelConfig(max_batch_size=16))
    assert out.name == "m"
    assert out.backend == "python"
    assert out.max_batch_size == 16
    assert [i.name for i in out.input] == ["x"]
    assert [o.name for o in out.output] == ["y"]
    assert out.input[0].data_type == pb.TYPE_FP32
    assert list(out.input[0].dims) == [-1]
    assert out.input[0].optional is False


def test_batching_enables_dynamic_batcher() -> None:
    out = build(config=ModelConfig(max_batch_size=8))
    assert out.HasField("dynamic_batching")
    assert out.dynamic_batching.max_queue_delay_microseconds == 0
    assert list(out.dynamic_batching.preferred_batch_size) == []


def test_no_batching_gives_max_batch_size_zero_and_no_batcher() -> None:
    config = ModelConfig(batching=False, batcher=DynamicBatcher(max_queue_delay_microseconds=500))
    out = build(config=config)
    assert out.max_batch_size == 0
    assert not out.HasField("dynamic_batching")


def test_dims_with_variable_axes() -> None:
    image = Tensor(name="image", dtype=np.uint8, shape=(-1, -1, 3))
    out = build(inputs=[image], outputs=[Tensor(name="logits", dtype=np.float16, shape=(1000,))])
    assert list(out.input[0].dims) == [-1, -1, 3]
    assert out.input[0].data_type == pb.TYPE_UINT8
    assert list(out.output[0].dims) == [1000]
    assert out.output[0].data_type == pb.TYPE_FP16


def test_scalar_tensor_has_no_dims() -> None:
    out = build(inputs=[Tensor(name="s", dtype=np.int64, shape=())])
    assert list(out.input[0].dims) == []


def test_optional_input() -> None:
    opt = Tensor(name="opt", dtype=np.int32, shape=(1,), optional=True)
    out = build(inputs=[X, opt])
    assert [(i.name, i.optional) for i in out.input] == [("x", False), ("opt", True)]


@pytest.mark.parametrize("dtype", [bytes, np.bytes_, object, np.object_, str])
def test_bytes_becomes_type_string(dtype: object) -> None:
    out = build(inputs=[Tensor(name="text", dtype=dtype, shape=(1,))])
    assert out.input[0].data_type == pb.TYPE_STRING
    assert "TYPE_STRING" in to_pbtxt(out)


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (np.bool_, pb.TYPE_BOOL),
        (np.uint8, pb.TYPE_UINT8),
        (np.uint16, pb.TYPE_UINT16),
        (np.uint32, pb.TYPE_UINT32),
        (np.uint64, pb.TYPE_UINT64),
        (np.int8, pb.TYPE_INT8),
        (np.int16, pb.TYPE_INT16),
        (np.int32, pb.TYPE_INT32),
        (np.int64, pb.TYPE_INT64),
        (np.float16, pb.TYPE_FP16),
        (np.float32, pb.TYPE_FP32),
        (np.float64, pb.TYPE_FP64),
    ],
)
def test_numeric_data_types(dtype: type, expected: int) -> None:
    out = build(outputs=[Tensor(name="o", dtype=dtype, shape=(2,))])
    assert out.output[0].data_type == expected


def test_dynamic_batcher_fields() -> None:
    batcher = DynamicBatcher(
        max_queue_delay_microseconds=250,
        preferred_batch_size=[4, 8],
        preserve_ordering=True,
        priority_levels=3,
        default_priority_level=2,
        default_queue_policy=QueuePolicy(
            timeout_action=TimeoutAction.DELAY,
            default_timeout_microseconds=1000,
            allow_timeout_override=True,
            max_queue_size=7,
        ),
        priority_queue_policy={
            1: QueuePolicy(max_queue_size=3),
            3: QueuePolicy(timeout_action=TimeoutAction.DELAY, default_timeout_microseconds=50),
        },
    )
    dyn = build(config=ModelConfig(max_batch_size=8, batcher=batcher)).dynamic_batching
    assert dyn.max_queue_delay_microseconds == 250
    assert list(dyn.preferred_batch_size) == [4, 8]
    assert dyn.preserve_ordering is True
    assert dyn.priority_levels == 3
    assert dyn.default_priority_level == 2
    default = dyn.default_queue_policy
    assert default.timeout_action == pb.ModelQueuePolicy.DELAY
    assert default.default_timeout_microseconds == 1000
    assert default.allow_timeout_override is True
    assert default.max_queue_size == 7
    assert sorted(dyn.priority_queue_policy) == [1, 3]
    assert dyn.priority_queue_policy[1].max_queue_size == 3
    assert dyn.priority_queue_policy[1].timeout_action == pb.ModelQueuePolicy.REJECT
    assert dyn.priority_queue_policy[3].timeout_action == pb.ModelQueuePolicy.DELAY
    assert dyn.priority_queue_policy[3].default_timeout_microseconds == 50


def test_no_queue_policy_when_not_given() -> None:
    dyn = build().dynamic_batching
    assert not dyn.HasField("default_queue_policy")
    assert len(dyn.priority_queue_policy) == 0


def test_decoupled_sets_transaction_policy() -> None:
    assert build(config=ModelConfig(decoupled=True)).model_transaction_policy.decoupled is True
    assert not build().HasField("model_transaction_policy")


def test_response_cache() -> None:
    assert build(config=ModelConfig(response_cache=True)).response_cache.enable is True
    assert not build().HasField("response_cache")


def test_model_warmup() -> None:
    warmup = [
        ModelWarmup(
            name="w1",
            batch_size=2,
            count=3,
            inputs={
                "x": WarmupInput(dtype=np.float32, shape=(4,), random_data=True),
                "z": WarmupInput(dtype=np.int64, shape=(1, 2)),
                "f": WarmupInput(dtype=bytes, shape=(1,), input_data_file="raw_f"),
            },
        )
    ]
    out = build(config=ModelConfig(model_warmup=warmup))
    assert len(out.model_warmup) == 1
    entry = out.model_warmup[0]
    assert (entry.name, entry.batch_size, entry.count) == ("w1", 2, 3)
    assert entry.inputs["x"].data_type == pb.TYPE_FP32
    assert list(entry.inputs["x"].dims) == [4]
    assert entry.inputs["x"].WhichOneof("input_data_type") == "random_data"
    assert entry.inputs["z"].data_type == pb.TYPE_INT64
    assert list(entry.inputs["z"].dims) == [1, 2]
    assert entry.inputs["z"].WhichOneof("input_data_type") == "zero_data"
    assert entry.inputs["f"].data_type == pb.TYPE_STRING
    assert entry.inputs["f"].input_data_file == "raw_f"


def test_parameters_merge_with_call_parameters_winning() -> None:
    config = ModelConfig(parameters={"a": "1", "b": "2"})
    out = build(config=config, parameters={"b": "override", "c": "3"})
    assert {k: v.string_value for k, v in out.parameters.items()} == {"a": "1", "b": "override", "c": "3"}


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (DeviceKind.KIND_CPU, pb.ModelInstanceGroup.KIND_CPU),
        (DeviceKind.KIND_GPU, pb.ModelInstanceGroup.KIND_GPU),
        (DeviceKind.KIND_AUTO, pb.ModelInstanceGroup.KIND_AUTO),
    ],
)
def test_instance_group(kind: DeviceKind, expected: int) -> None:
    out = build(instance_count=5, device_kind=kind)
    assert len(out.instance_group) == 1
    group = out.instance_group[0]
    assert group.count == 5
    assert group.kind == expected
    assert group.name == "m"


def test_instance_group_defaults_to_cpu() -> None:
    assert build(instance_count=2).instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU


@pytest.mark.parametrize("kind", ["input", "output"])
def test_unnamed_tensor_raises(kind: str) -> None:
    unnamed = Tensor(dtype=np.float32, shape=(1,))
    with pytest.raises(PyTritonTorchValidationError, match=f"model 'm': every {kind} Tensor needs a name"):
        if kind == "input":
            build(inputs=[unnamed])
        else:
            build(outputs=[unnamed])


@pytest.mark.parametrize("kind", ["input", "output"])
def test_duplicate_names_raise(kind: str) -> None:
    tensors = [
        Tensor(name="dup", dtype=np.float32, shape=(1,)),
        Tensor(name="dup", dtype=np.int8, shape=(2,)),
    ]
    with pytest.raises(PyTritonTorchValidationError, match=f"model 'm': {kind} name 'dup' is repeated"):
        if kind == "input":
            build(inputs=tensors)
        else:
            build(outputs=tensors)


def test_same_name_for_input_and_output_is_allowed() -> None:
    out = build(inputs=[Tensor(name="z", dtype=np.float32, shape=(1,))], outputs=[Y, X])
    assert [o.name for o in out.output] == ["y", "x"]


def test_optional_output_raises() -> None:
    optional = Tensor(name="y", dtype=np.float32, shape=(1,), optional=True)
    with pytest.raises(PyTritonTorchValidationError, match="model 'm': outputs cannot be optional"):
        build(outputs=[optional])


def test_no_outputs_raises() -> None:
    with pytest.raises(PyTritonTorchValidationError, match="model 'm': at least one output"):
        build(outputs=[])


def test_no_inputs_allowed() -> None:
    out = build(inputs=[])
    assert len(out.input) == 0


def full_config() -> pb.ModelConfig:
    return build(
        inputs=[X, Tensor(name="text", dtype=bytes, shape=(-1,), optional=True)],
        outputs=[Y, Tensor(name="ids", dtype=np.int64, shape=(2, -1))],
        config=ModelConfig(
            max_batch_size=32,
            batcher=DynamicBatcher(
                max_queue_delay_microseconds=100,
                preferred_batch_size=[16, 32],
                priority_levels=2,
                default_priority_level=1,
                default_queue_policy=QueuePolicy(max_queue_size=10),
                priority_queue_policy={2: QueuePolicy(timeout_action=TimeoutAction.DELAY)},
            ),
            decoupled=True,
            response_cache=True,
            model_warmup=[
                ModelWarmup(name="w", batch_size=1, inputs={"x": WarmupInput(dtype=np.float32, shape=(3,))})
            ],
            parameters={"k": "v"},
        ),
        instance_count=2,
        device_kind=DeviceKind.KIND_GPU,
        parameters={"p": "q"},
    )


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(lambda: build(), id="default"),
        pytest.param(lambda: build(config=ModelConfig(batching=False)), id="no-batching"),
        pytest.param(full_config, id="full"),
    ],
)
def test_pbtxt_round_trip(config: Any) -> None:
    original = config()
    text = to_pbtxt(original)
    assert isinstance(text, str)
    assert 'name: "m"' in text
    parsed = round_trip(original)
    assert parsed == original
    assert parsed.SerializeToString(deterministic=True) == original.SerializeToString(deterministic=True)


def test_pbtxt_text_contents() -> None:
    text = to_pbtxt(full_config())
    assert 'backend: "python"' in text
    assert "max_batch_size: 32" in text
    assert "dims: -1" in text
    assert "optional: true" in text
    assert "decoupled: true" in text
    assert "KIND_GPU" in text
    assert "preferred_batch_size: 16" in text
