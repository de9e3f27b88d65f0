"""``Triton.bind_module``: serve a ``torch.nn.Module`` (eager, scripted, compiled or exported)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..exceptions import PyTritonTorchValidationError
from ..model_config import ModelConfig, Tensor
from ._adapter import TorchInfer, resolve_devices
from ._memory_format import check_memory_format, choose_channels_last
from ._runner import ModuleRunner
from ._spec import flatten_outputs, input_names, input_specs, output_specs

if TYPE_CHECKING:
    from ..triton import Triton

LOGGER = logging.getLogger("pytriton_torch.torch")

_AUTOCAST = {
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def _examples(example_inputs: Any, what: str) -> tuple[list[str] | None, list[torch.Tensor]]:
    if isinstance(example_inputs, torch.Tensor):
        return None, [example_inputs]
    if isinstance(example_inputs, Mapping):
        return [str(k) for k in example_inputs], list(example_inputs.values())
    if isinstance(example_inputs, list | tuple):
        return None, list(example_inputs)
    raise PyTritonTorchValidationError(
        f"{what}: example_inputs is {type(example_inputs).__name__}; expected a Tensor, a tuple of Tensors or a dict"
    )


def _autocast_dtype(autocast: str | torch.dtype | None) -> torch.dtype | None:
    if autocast is None or isinstance(autocast, torch.dtype):
        return autocast
    try:
        return _AUTOCAST[autocast]
    except KeyError:
        raise PyTritonTorchValidationError(
            f"autocast={autocast!r} is not supported; expected one of {', '.join(_AUTOCAST)} or a torch dtype"
        ) from None


def bind_module(
    triton: Triton,
    model_name: str,
    module: torch.nn.Module,
    *,
    example_inputs: Any,
    method: str = "forward",
    inputs: Sequence[Tensor] | None = None,
    outputs: Sequence[Tensor] | None = None,
    device: str | torch.device | Sequence[str | torch.device] = "auto",
    instances: int = 1,
    config: ModelConfig | None = None,
    dynamic_axes: Mapping[str, Sequence[int]] | None = None,
    autocast: str | torch.dtype | None = None,
    inference_mode: bool = True,
    compile: bool = False,
    compile_options: Mapping[str, Any] | None = None,
    warmup_runs: int = 1,
    strict: bool = False,
    cuda_graphs: bool | Sequence[int] = False,
    memory_format: str = "auto",
) -> list[ModuleRunner]:
    """Implementation of :meth:`pytriton_torch.triton.Triton.bind_module`; returns the instance runners."""
    what = f"model {model_name!r}"
    check_memory_format(memory_format, what)
    config = config or ModelConfig(max_batch_size=64)
    if instances < 1:
        raise PyTritonTorchValidationError(f"{what}: instances must be >= 1, got {instances}")
    if not isinstance(module, torch.export.ExportedProgram) and not callable(getattr(module, method, None)):
        raise PyTritonTorchValidationError(
            f"{what}: {type(module).__name__} has no method {method!r} to serve"
        )
    devices = resolve_devices(device, instances, f"{what}: ")
    cast = _autocast_dtype(autocast)
    given_names, examples = _examples(example_inputs, what)

    exported = isinstance(module, torch.export.ExportedProgram)
    if exported:  # a torch.export program: serve its module (graph already in inference form)
        module = module.module()  # type: ignore[operator]
    # One module object per device: instances on that device share its weights.
    placed: dict[torch.device, Any] = {}
    for dev in dict.fromkeys(devices):
        placed[dev] = module.to(dev) if hasattr(module, "to") and dev != torch.device("cpu") else module
        if hasattr(placed[dev], "eval") and not exported:  # exported modules refuse eval()
            placed[dev].eval()

    names = given_names or input_names(getattr(module, method), len(examples), what)
    derived_inputs = input_specs(
        names, examples, batching=config.batching, dynamic_axes=dynamic_axes, what=what
    )

    def make_runner(
        dev: torch.device, target: Any, served: Sequence[str], renames: dict[str, str], layout: Sequence[int]
    ) -> ModuleRunner:
        return ModuleRunner(
            target,
            model_name=model_name,
            input_names=served,
            output_names=renames,
            device=dev,
            batching=config.batching,
            autocast=cast,
            inference_mode=inference_mode,
            channels_last=layout,
        )

    LOGGER.info("%s: example call on %s to derive outputs and warm up", what, devices[0])
    eager = make_runner(devices[0], getattr(placed[devices[0]], method), names, {}, ())
    example_outputs = eager.run(examples)

    def channels_last_run(positions: list[int]) -> dict[str, torch.Tensor]:
        eager.channels_last = set(positions)
        return eager.run(examples)

    layout = choose_channels_last(
        memory_format,
        modules=[m for m in placed.values() if hasattr(m, "to")],
        examples=examples,
        reference=example_outputs,
        run=channels_last_run,
        what=what,
    )
    per_device: dict[torch.device, Any] = {}
    for dev, placed_module in placed.items():
        target = getattr(placed_module, method)
        if compile:
            LOGGER.info("%s: compiling %s.%s for %s", what, type(module).__name__, method, dev)
            target = torch.compile(target, **dict(compile_options or {}))
        per_device[dev] = target
    derived_outputs = output_specs(
        example_outputs, batching=config.batching, dynamic=bool(dynamic_axes), what=what
    )
    final_inputs, _ = _override(derived_inputs, inputs, "input")
    final_outputs, renames = _override(derived_outputs, outputs, "output")
    if cuda_graphs and dynamic_axes:
        raise PyTritonTorchValidationError(
            f"{what}: CUDA graphs need static shapes; drop dynamic_axes or cuda_graphs"
        )
    served = [str(t.name) for t in final_inputs]
    runners = [make_runner(dev, per_device[dev], served, renames, layout) for dev in devices]
    instances_ = [TorchInfer(runner, runner.device, model_name=model_name) for runner in runners]
    sizes = _graph_sizes(cuda_graphs, config)
    for index, (runner, instance) in enumerate(zip(runners, instances_, strict=True)):
        if warmup_runs > 0:
            LOGGER.info(
                "%s: warming up instance %d on %s (%d run(s))", what, index, runner.device, warmup_runs
            )
        with instance.on_stream():
            for _ in range(max(0, warmup_runs)):
                flatten_outputs(runner.run(examples), what)
            if sizes:
                runner.capture_graphs(examples, sizes, instance.stream)
        instance.synchronize()
    triton.bind(
        model_name, instances_, final_inputs, final_outputs, config=config, strict=strict, tensors="torch"
    )
    return runners


def _graph_sizes(cuda_graphs: bool | Sequence[int], config: ModelConfig) -> list[int]:
    """Batch sizes to capture: the given ones, or the preferred sizes, or powers of two up to the max."""
    if not cuda_graphs:
        return []
    if not isinstance(cuda_graphs, bool):
        sizes = sorted({int(size) for size in cuda_graphs})
    elif config.batcher.preferred_batch_size:
        sizes = sorted({*config.batcher.preferred_batch_size, config.max_batch_size})
    else:
        sizes = sorted(
            {
                *(2**i for i in range(config.max_batch_size.bit_length()) if 2**i <= config.max_batch_size),
                config.max_batch_size,
            }
        )
    if any(size < 1 or size > config.max_batch_size for size in sizes):
        raise PyTritonTorchValidationError(
            f"CUDA graph batch sizes {sizes} must be between 1 and max_batch_size={config.max_batch_size}"
        )
    return sizes


def _override(
    derived: Sequence[Tensor], given: Sequence[Tensor] | None, kind: str
) -> tuple[list[Tensor], dict[str, str]]:
    """Explicit specs win over derived ones.

    Returns the specs to serve and, for outputs, module name -> served name: given specs that use
    the module's names match by name, others rename the module's tensors by position.
    """
    identity = {str(t.name): str(t.name) for t in derived}
    if given is None:
        return list(derived), identity
    derived_names = [str(t.name) for t in derived]
    given_names = [str(t.name) for t in given]
    if set(given_names) <= set(derived_names):
        return list(given), {name: name for name in given_names}
    if len(given) != len(derived):
        raise PyTritonTorchValidationError(
            f"{len(given)} {kind} spec(s) {given_names} given but the module has {len(derived)} {kind}(s) "
            f"{derived_names}; use the module's names, or give one spec per {kind} to rename them in order"
        )
    return list(given), dict(zip(derived_names, given_names, strict=True))
