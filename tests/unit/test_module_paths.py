"""Every PyTriton 0.7.0 module path of a name we export imports under ``pytriton_torch.`` with that name."""

from __future__ import annotations

import importlib

import pytest

import pytriton_torch

# PyTriton module (without the "pytriton." prefix) -> the names of ours it must give.
PATHS: dict[str, list[str]] = {
    "triton": ["Triton", "TritonConfig"],
    "decorators": [
        "ConstantPadder",
        "TritonContext",
        "batch",
        "fill_optionals",
        "first_value",
        "get_model_config",
        "get_triton_context",
        "group_by_keys",
        "group_by_values",
        "pad_batch",
        "sample",
        "triton_context",
    ],
    "model_config": ["DeviceKind", "DynamicBatcher", "ModelConfig", "QueuePolicy", "Tensor", "TimeoutAction"],
    "model_config.common": [
        "DeviceKind",
        "DynamicBatcher",
        "ModelWarmup",
        "QueuePolicy",
        "TimeoutAction",
        "WarmupInput",
    ],
    "model_config.tensor": ["Tensor"],
    "model_config.model_config": ["ModelConfig"],
    "proxy.types": ["Request"],
    "exceptions": [
        "PyTritonError",
        "PyTritonValidationError",
        "PyTritonBadParameterError",
        "PyTritonInvalidOperationError",
        "PyTritonModelConfigError",
        "PyTritonUnrecoverableError",
        "PyTritonRuntimeError",
    ],
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_path_gives_the_names(path: str) -> None:
    module = importlib.import_module(f"pytriton_torch.{path}")
    for name in PATHS[path]:
        ours = getattr(module, name)
        if hasattr(pytriton_torch, name):
            assert ours is getattr(pytriton_torch, name), f"{path}.{name} is another object"
        assert name in getattr(module, "__all__", [name])


@pytest.mark.parametrize("path", sorted(PATHS))
def test_pytriton_has_the_same_names_there(path: str) -> None:
    pytest.importorskip("pytriton")
    theirs = importlib.import_module(f"pytriton.{path}")
    assert [name for name in PATHS[path] if not hasattr(theirs, name)] == []


def test_model_warmup_types_are_the_ones_bind_takes() -> None:
    from pytriton_torch.model_config import ModelWarmup, WarmupInput
    from pytriton_torch.model_config.common import ModelWarmup as CommonWarmup
    from pytriton_torch.model_config.common import WarmupInput as CommonInput

    assert (CommonWarmup, CommonInput) == (ModelWarmup, WarmupInput)
