"""Channels-last selection for convolutional modules (no server needed)."""

from __future__ import annotations

import logging

import pytest
import torch

from pytriton_torch._torch._memory_format import (
    check_memory_format,
    choose_channels_last,
    has_conv2d,
    image_inputs,
)
from pytriton_torch._torch._runner import ModuleRunner
from pytriton_torch.exceptions import PyTritonTorchValidationError


class SmallCnn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(image)).mean(dim=(2, 3)))


class ViewsActivations(SmallCnn):
    """``.view`` on a conv output needs NCHW strides: channels-last raises here."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.conv(image))
        return out.view(out.shape[0], -1)[:, :4]


class LayoutSensitive(SmallCnn):
    """Reads raw memory order, so channels-last changes the answer."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.conv(image)
        flat = out.as_strided((out.shape[0], 8), (out.stride(0), 1))
        return flat


def _cpu_runner(module: torch.nn.Module) -> ModuleRunner:
    return ModuleRunner(
        module.forward,
        model_name="m",
        input_names=["x"],
        output_names={},
        device=torch.device("cpu"),
        batching=True,
    )


def _decide(
    module: torch.nn.Module, memory_format: str, example: torch.Tensor
) -> tuple[list[int], ModuleRunner]:
    runner = _cpu_runner(module)
    reference = runner.run([example])

    def run(positions: list[int]) -> dict[str, torch.Tensor]:
        runner.channels_last = set(positions)
        return runner.run([example])

    chosen = choose_channels_last(
        memory_format, modules=[module], examples=[example], reference=reference, run=run, what="model 'm'"
    )
    runner.channels_last = set(chosen)
    return chosen, runner


def test_detection_of_convolutions_and_image_inputs() -> None:
    assert has_conv2d(SmallCnn())
    assert has_conv2d(torch.jit.script(SmallCnn()))
    assert not has_conv2d(torch.nn.Linear(2, 2))
    assert not has_conv2d(object())
    examples = [torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4, dtype=torch.int64), torch.zeros(1, 4)]
    assert image_inputs(examples) == [0]


def test_auto_picks_channels_last_for_a_cnn_and_answers_the_same() -> None:
    net = SmallCnn().eval()
    example = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        expected = net(example)
    chosen, runner = _decide(net, "auto", example)
    assert chosen == [0]
    assert net.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not net.conv.weight.is_contiguous()
    got = runner.run([example])["OUTPUT__0"]
    assert torch.allclose(got, expected, atol=1e-5)


def test_auto_keeps_the_layout_without_convolutions_or_images() -> None:
    linear = torch.nn.Linear(16, 4).eval()
    runner = _cpu_runner(linear)
    example = torch.zeros(2, 16)
    chosen = choose_channels_last(
        "auto",
        modules=[linear],
        examples=[example],
        reference=runner.run([example]),
        run=lambda _: pytest.fail("no channels-last trial expected"),
        what="model 'm'",
    )
    assert chosen == []
    net = SmallCnn().eval()
    assert _decide(net, "contiguous", torch.randn(1, 3, 8, 8))[0] == []
    assert net.conv.weight.is_contiguous()


@pytest.mark.parametrize("module", [ViewsActivations, LayoutSensitive])
def test_auto_falls_back_with_a_warning_when_channels_last_breaks_the_module(
    module: type[SmallCnn], caplog: pytest.LogCaptureFixture
) -> None:
    net = module().eval()
    example = torch.randn(2, 3, 8, 8)
    with caplog.at_level(logging.WARNING, logger="pytriton_torch.torch"):
        chosen, runner = _decide(net, "auto", example)
    assert chosen == []
    assert net.conv.weight.is_contiguous()  # converted back
    assert "keeping the default memory format" in caplog.text
    with torch.inference_mode():
        assert torch.equal(runner.run([example])["OUTPUT__0"], net(example))


def test_explicit_channels_last_raises_when_it_cannot_work() -> None:
    with pytest.raises(
        PyTritonTorchValidationError, match="does not run in channels-last format: RuntimeError"
    ):
        _decide(ViewsActivations().eval(), "channels_last", torch.randn(2, 3, 8, 8))
    with pytest.raises(PyTritonTorchValidationError, match="output 'OUTPUT__0' differs"):
        _decide(LayoutSensitive().eval(), "channels_last", torch.randn(2, 3, 8, 8))
    with pytest.raises(PyTritonTorchValidationError, match="needs a 4-D floating-point input"):
        _decide(torch.nn.Linear(8, 4).eval(), "channels_last", torch.zeros(2, 3, 8))


def test_unknown_memory_format_is_refused() -> None:
    with pytest.raises(PyTritonTorchValidationError, match="memory_format='nhwc' is not supported"):
        check_memory_format("nhwc", "model 'm'")
