"""Unit tests of pytriton_torch._context: inject_context / get_context on every kind of callable."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from pytriton_torch._context import ModelInfo, TritonContext, get_context, inject_context
from pytriton_torch.exceptions import PyTritonTorchValidationError
from pytriton_torch.model_config import Tensor


def make_info(name: str) -> ModelInfo:
    return ModelInfo(
        model_name=name,
        inputs=(Tensor(name="x", dtype=np.float32, shape=(-1,)),),
        outputs=(Tensor(name="y", dtype=np.float32, shape=(-1,)),),
        batching=True,
        max_batch_size=4,
    )


def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


class Model:
    def infer(self, requests: Any) -> Any:
        return requests

    def other(self, requests: Any) -> Any:
        return requests


def test_plain_function() -> None:
    def infer(requests: Any) -> Any:
        return requests

    info = make_info("plain")
    inject_context(infer, info)
    context = get_context(infer)
    assert isinstance(context, TritonContext)
    assert context.model_configs[infer] is info
    assert context.info_for(infer) is info
    assert infer.__triton_context__ is context  # type: ignore[attr-defined]


def test_bound_method_context_lives_on_instance() -> None:
    model = Model()
    info = make_info("method")
    inject_context(model.infer, info)
    context = get_context(model.infer)
    assert model.__triton_context__ is context  # type: ignore[attr-defined]
    assert context.model_configs[model.infer] is info
    assert context.model_configs[Model.infer] is info
    assert context.info_for(model.infer) is info
    # The instance can be given explicitly, e.g. from inside the class.
    assert get_context(Model.infer, model) is context


def test_two_methods_of_one_instance_keep_separate_infos() -> None:
    model = Model()
    first, second = make_info("first"), make_info("second")
    inject_context(model.infer, first)
    inject_context(model.other, second)
    context = get_context(model.infer)
    assert get_context(model.other) is context
    assert context.info_for(model.infer) is first
    assert context.info_for(model.other) is second
    assert len(context.model_configs) == 2


def test_two_instances_keep_separate_contexts() -> None:
    a, b = Model(), Model()
    inject_context(a.infer, make_info("a"))
    inject_context(b.infer, make_info("b"))
    assert get_context(a.infer) is not get_context(b.infer)
    assert get_context(a.infer).info_for(a.infer).model_name == "a"
    assert get_context(b.infer).info_for(b.infer).model_name == "b"


def test_wrapped_function_every_layer_finds_context() -> None:
    def infer(requests: Any) -> Any:
        return requests

    middle = wrap(infer)
    outer = wrap(middle)
    info = make_info("wrapped")
    inject_context(outer, info)
    context = get_context(outer)
    assert get_context(middle) is context
    assert get_context(infer) is context
    for fn in (outer, middle, infer):
        assert context.model_configs[fn] is info
        assert context.info_for(fn) is info
    assert outer("r") == "r"


def test_wrapped_bound_method() -> None:
    model = Model()
    wrapped = wrap(model.infer)
    info = make_info("wrapped-method")
    inject_context(wrapped, info)
    context = get_context(wrapped)
    assert context.info_for(wrapped) is info
    assert context.model_configs[model.infer] is info


def test_callable_object() -> None:
    class Callable_:
        def __call__(self, requests: Any) -> Any:
            return requests

    obj = Callable_()
    info = make_info("callable")
    inject_context(obj, info)
    assert get_context(obj).info_for(obj) is info


def test_reinjection_replaces_info() -> None:
    def infer(requests: Any) -> Any:
        return requests

    inject_context(infer, make_info("old"))
    context = get_context(infer)
    inject_context(infer, make_info("new"))
    assert get_context(infer) is context
    assert context.info_for(infer).model_name == "new"
    assert len(context.model_configs) == 1


def test_slotted_owner_is_silently_skipped() -> None:
    class Slotted:
        __slots__ = ()

        def infer(self, requests: Any) -> Any:
            return requests

    obj = Slotted()
    inject_context(obj.infer, make_info("slotted"))
    with pytest.raises(PyTritonTorchValidationError, match="has no Triton context"):
        get_context(obj.infer)


def test_builtin_does_not_pollute_its_module() -> None:
    import builtins

    try:
        inject_context(len, make_info("builtin"))
        assert not hasattr(builtins, "__triton_context__")
    finally:
        if hasattr(builtins, "__triton_context__"):
            del builtins.__triton_context__


def test_missing_context_error_names_function() -> None:
    def never_bound(requests: Any) -> Any:
        return requests

    with pytest.raises(PyTritonTorchValidationError, match=r"'never_bound' has no Triton context") as info:
        get_context(never_bound)
    assert "Triton.bind()" in str(info.value)


def test_missing_context_for_method() -> None:
    with pytest.raises(PyTritonTorchValidationError, match=r"'infer' has no Triton context"):
        get_context(Model().infer)


def test_foreign_attribute_is_not_a_context() -> None:
    def infer(requests: Any) -> Any:
        return requests

    infer.__triton_context__ = {"not": "a context"}  # type: ignore[attr-defined]
    with pytest.raises(PyTritonTorchValidationError):
        get_context(infer)


def test_info_for_single_entry_fallback_and_unknown() -> None:
    def bound(requests: Any) -> Any:
        return requests

    def stranger(requests: Any) -> Any:
        return requests

    def second(requests: Any) -> Any:
        return requests

    context = TritonContext()
    context.model_configs[bound] = make_info("only")
    assert context.info_for(stranger).model_name == "only"
    context.model_configs[second] = make_info("second")
    with pytest.raises(KeyError, match="is not bound to a model"):
        context.info_for(stranger)


def test_model_configs_key_normalisation() -> None:
    def infer(requests: Any) -> Any:
        return requests

    wrapper = wrap(infer)
    context = TritonContext()
    context.model_configs[wrapper] = make_info("k")
    assert infer in context.model_configs
    assert context.model_configs.get(infer).model_name == "k"
    assert context.model_configs.get(Model.infer, "missing") == "missing"
    del context.model_configs[infer]
    assert wrapper not in context.model_configs
    assert len(context.model_configs) == 0
