"""What a bound infer function may learn about its model (used by ``@triton_context`` and friends)."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

from .model_config import Tensor


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """The binding of one model, as seen by its infer functions.

    Attributes:
        model_name: Name the model is served under.
        inputs: Declared inputs, in order.
        outputs: Declared outputs, in order (a list returned by ``@batch`` functions maps to these).
        batching: Whether tensors carry a batch axis.
        max_batch_size: Largest batch Triton sends.
        decoupled: Whether the model streams (generator infer function).
        preferred_batch_sizes: The dynamic batcher's preferred batch sizes (sorted; empty when
            none are set or the model does not batch); ``@pad_batch`` pads up to them.
    """

    model_name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    batching: bool
    max_batch_size: int
    decoupled: bool = False
    preferred_batch_sizes: tuple[int, ...] = ()


def _key(fn: Callable[..., Any]) -> Any:
    """Key under which a callable's info is stored: unwrap decorators, keep bound-method owner."""
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    return getattr(fn, "__func__", fn)


class _ModelConfigs(dict[Any, ModelInfo]):
    """A dict whose keys are normalised with ``_key``: decorated callables and bound methods find their entry."""

    def __getitem__(self, fn: Any) -> ModelInfo:
        return super().__getitem__(_key(fn))

    def __setitem__(self, fn: Any, info: ModelInfo) -> None:
        super().__setitem__(_key(fn), info)

    def __delitem__(self, fn: Any) -> None:
        super().__delitem__(_key(fn))

    def __contains__(self, fn: object) -> bool:
        return super().__contains__(_key(fn))  # type: ignore[arg-type]

    def get(self, fn: Any, default: Any = None) -> Any:
        return super().get(_key(fn), default)


@dataclasses.dataclass
class TritonContext:
    """Per-binding context injected into infer callables as ``__triton_context__``.

    ``model_configs[fn]`` returns the :class:`ModelInfo` of the model ``fn`` is bound to
    (``fn`` may be the decorated or undecorated callable).
    """

    model_configs: dict[Any, ModelInfo] = dataclasses.field(default_factory=_ModelConfigs)

    def info_for(self, fn: Callable[..., Any]) -> ModelInfo:
        """The ModelInfo of ``fn``; falls back to the only entry when there is one."""
        key = _key(fn)
        if key in self.model_configs:
            return self.model_configs[key]
        if len(self.model_configs) == 1:
            return next(iter(self.model_configs.values()))
        raise KeyError(f"{fn!r} is not bound to a model in this context")


def inject_context(fn: Callable[..., Any], info: ModelInfo) -> None:
    """Attach ``info`` to ``fn`` (and to its owner object when ``fn`` is a bound method)."""
    owner = getattr(fn, "__self__", None)
    if inspect.ismodule(owner):  # builtins report their module as __self__; never write to a module
        owner = None
    target: Any = owner if owner is not None else fn
    context: TritonContext | None = getattr(target, "__triton_context__", None)
    if context is None:
        context = TritonContext()
        try:
            target.__triton_context__ = context
        except AttributeError:  # builtins / slotted objects: context stays reachable via info
            return
    context.model_configs[_key(fn)] = info
    # Decorated callables: the outermost wrapper must find it as well.
    if target is not fn:
        return
    inner = fn
    while hasattr(inner, "__wrapped__"):
        inner = inner.__wrapped__
        try:
            inner.__triton_context__ = context  # type: ignore[attr-defined]
        except AttributeError:
            break


def get_context(fn: Callable[..., Any], instance: Any = None) -> TritonContext:
    """The TritonContext injected into ``fn`` (or its owner ``instance``) by ``bind``."""
    for candidate in (instance, fn, getattr(fn, "__self__", None)):
        context = getattr(candidate, "__triton_context__", None) if candidate is not None else None
        if isinstance(context, TritonContext):
            return context
    from .exceptions import PyTritonTorchValidationError

    raise PyTritonTorchValidationError(
        f"{getattr(fn, '__name__', fn)!r} has no Triton context: it must be bound with Triton.bind() first"
    )
