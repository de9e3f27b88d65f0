"""Memory format of a served module: channels-last for convolutional networks where it works.

oneDNN (CPU) and cuDNN (GPU) run 2-D convolutions markedly faster on channels-last (NHWC)
tensors than on the default NCHW layout: 1.3-1.6x for a ResNet-18 on CPU. ``bind_module``
converts the module's weights and its 4-D floating-point inputs once, after checking on the
example inputs that the module still runs and gives the same answer that way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from ..exceptions import PyTritonTorchValidationError

LOGGER = logging.getLogger("pytriton_torch.torch")

MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
_CONV_NAMES = {"Conv2d", "ConvTranspose2d"}


def check_memory_format(memory_format: str, what: str) -> str:
    if memory_format not in MEMORY_FORMATS:
        raise PyTritonTorchValidationError(
            f"{what}: memory_format={memory_format!r} is not supported; expected one of {', '.join(MEMORY_FORMATS)}"
        )
    return memory_format


def has_conv2d(module: Any) -> bool:
    """Whether the module (eager or TorchScript) contains a 2-D (transposed) convolution."""
    modules = getattr(module, "modules", None)
    if not callable(modules):
        return False
    for sub in modules():
        if isinstance(sub, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            return True
        if getattr(sub, "original_name", None) in _CONV_NAMES:  # a scripted submodule
            return True
    return False


def image_inputs(examples: Sequence[torch.Tensor]) -> list[int]:
    """Positions of the inputs that channels-last applies to: 4-D floating-point tensors."""
    return [i for i, t in enumerate(examples) if t.dim() == 4 and t.is_floating_point()]


def _convert(modules: Iterable[Any], memory_format: torch.memory_format) -> None:
    for module in modules:
        module.to(memory_format=memory_format)


def _mismatch(reference: dict[str, torch.Tensor], candidate: dict[str, torch.Tensor]) -> str:
    """Why the channels-last answer differs from the reference ("" when it agrees)."""
    if reference.keys() != candidate.keys():
        return f"outputs {sorted(candidate)} instead of {sorted(reference)}"
    for name, expected in reference.items():
        got = candidate[name]
        if got.shape != expected.shape or got.dtype != expected.dtype:
            return f"output {name!r} is {got.dtype} {tuple(got.shape)} instead of {expected.dtype} {tuple(expected.shape)}"
        if not expected.is_floating_point():
            if not torch.equal(got.cpu(), expected.cpu()):
                return f"output {name!r} differs"
            continue
        want, have = expected.detach().float().cpu(), got.detach().float().cpu()
        # Kernels differ between layouts, so results differ in the last bits; a layout bug does not.
        scale = float(want.abs().max()) if want.numel() else 0.0
        if not torch.allclose(have, want, rtol=1e-2, atol=1e-3 * scale + 1e-6):
            return f"output {name!r} differs by up to {float((have - want).abs().max()):.3g}"
    return ""


def choose_channels_last(
    memory_format: str,
    *,
    modules: Sequence[Any],
    examples: Sequence[torch.Tensor],
    reference: dict[str, torch.Tensor],
    run: Callable[[list[int]], dict[str, torch.Tensor]],
    what: str,
) -> list[int]:
    """Decide the layout; returns the input positions to feed channels-last (empty: keep NCHW).

    ``modules``: the served module objects (one per device), converted in place when channels-last
    is chosen. ``reference``: the example's outputs in the default layout. ``run(positions)``: the
    example call with those inputs converted. ``"auto"`` picks channels-last for modules with 2-D
    convolutions and image inputs when that call agrees with the reference, and falls back with a
    warning otherwise; ``"channels_last"`` insists and raises instead.
    """
    if memory_format == "contiguous":
        return []
    positions = image_inputs(examples)
    if memory_format == "auto" and not (positions and any(has_conv2d(m) for m in modules)):
        return []
    if not positions:
        raise PyTritonTorchValidationError(
            f"{what}: memory_format='channels_last' needs a 4-D floating-point input; the example inputs "
            f"are {[tuple(t.shape) for t in examples]}"
        )
    _convert(modules, torch.channels_last)
    try:
        problem = _mismatch(reference, run(positions))
    except Exception as exc:  # e.g. a .view() in forward that needs NCHW strides
        problem = f"{type(exc).__name__}: {exc}"
    if not problem:
        LOGGER.info("%s: serving in channels-last memory format (inputs %s)", what, positions)
        return positions
    _convert(modules, torch.contiguous_format)
    if memory_format == "channels_last":
        raise PyTritonTorchValidationError(
            f"{what}: the module does not run in channels-last format: {problem}"
        )
    LOGGER.warning(
        "%s: keeping the default memory format; channels-last did not work for this module: %s "
        "(pass memory_format='contiguous' to skip the check)",
        what,
        problem,
    )
    return []
