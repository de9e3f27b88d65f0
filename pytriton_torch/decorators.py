"""Decorators that adapt an infer function to the shape of data you want to work with.

Without decorators, an infer function receives ``list[Request]`` (one entry per client request
that Triton put in the batch) and returns one dict of outputs per request. The decorators here
rewrite that calling convention, with the same names and meaning as ``pytriton.decorators``:

* :func:`batch` joins the requests into one batch per input and passes them as keyword
  arguments; the returned batch is cut back into one response per request.
* :func:`sample` calls the function once per request with that request's inputs.
* :func:`group_by_keys` / :func:`group_by_values` split a call into consistent groups.
* :func:`fill_optionals`, :func:`first_value` and :func:`pad_batch` prepare inputs.
* :func:`triton_context` passes the binding's :class:`TritonContext` as ``triton_context``.

Every decorator works on plain functions and on methods, and keeps working when the wrapped
function is a generator (streaming models), a coroutine function or an async generator.

Example::

    import numpy as np
    from pytriton_torch import ModelConfig, Tensor, Triton
    from pytriton_torch.decorators import batch, first_value

    @batch
    @first_value("scale")
    def infer(x, scale):
        return {"y": x * scale}

    with Triton() as triton:
        triton.bind(
            "scaler",
            infer,
            inputs=[
                Tensor(name="x", dtype=np.float32, shape=(-1,)),
                Tensor(name="scale", dtype=np.float32, shape=(1,)),
            ],
            outputs=[Tensor(name="y", dtype=np.float32, shape=(-1,))],
            config=ModelConfig(max_batch_size=16),
        )
        triton.serve()

Request parameters (``Request.parameters``) are not passed on by :func:`batch` or :func:`sample`,
as in PyTriton; an infer function that needs them takes the requests undecorated, or uses the
decorators that keep ``Request`` objects (:func:`group_by_keys`, :func:`fill_optionals` and
:func:`first_value` placed above :func:`batch`).
"""

from __future__ import annotations

import inspect
from bisect import bisect_left
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, cast

import numpy as np
import wrapt
from numpy.typing import NDArray

from . import _batching
from ._context import ModelInfo, TritonContext, get_context
from ._types import Request
from .exceptions import PyTritonTorchBadParameterError, PyTritonTorchValidationError

__all__ = [
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
]

InferFn = Callable[..., Any]
"""Any infer callable; decorators change its calling convention, so no finer type is given."""

Outputs = dict[str, Any]
PadFn = Callable[[Sequence[Outputs]], Sequence[Outputs]]

TRITON_CONTEXT_KWARG = "triton_context"
# Keyword arguments that carry no model input and are never batched, grouped or padded.
_SPECIAL_KWARGS = frozenset({TRITON_CONTEXT_KWARG, "__triton_context__"})


# --------------------------------------------------------------------------------------------
# Context helpers
# --------------------------------------------------------------------------------------------


def get_triton_context(fn: Callable[..., Any], instance: Any = None) -> TritonContext:
    """Return the :class:`TritonContext` that ``Triton.bind`` attached to ``fn`` (or to ``instance``).

    Useful in your own ``wrapt`` decorators; :func:`triton_context` passes it for you.

    Example::

        @wrapt.decorator
        def log_model(wrapped, instance, args, kwargs):
            context = get_triton_context(wrapped, instance)
            print(context.info_for(wrapped).model_name)
            return wrapped(*args, **kwargs)
    """
    return get_context(fn, instance)


def get_model_config(fn: Callable[..., Any], instance: Any = None) -> ModelInfo:
    """Return the :class:`ModelInfo` of the model that ``fn`` (a bound infer callable) serves.

    ``instance`` is the object whose method ``fn`` is, as ``wrapt`` passes it to a wrapper.

    Example::

        @wrapt.decorator
        def check_batching(wrapped, instance, args, kwargs):
            if not get_model_config(wrapped, instance).batching:
                raise ValueError("this function needs a batching model")
            return wrapped(*args, **kwargs)

    Raises:
        PyTritonTorchValidationError: ``fn`` was not bound with ``Triton.bind``.
    """
    context = get_context(fn, instance)
    try:
        return context.info_for(fn)
    except KeyError:
        pass
    if instance is not None:  # a decorated ``__call__``: the object itself was bound
        try:
            return context.info_for(instance)
        except KeyError:
            pass
    name = getattr(fn, "__qualname__", None) or repr(fn)
    known = ", ".join(sorted(info.model_name for info in context.model_configs.values())) or "none"
    raise PyTritonTorchValidationError(
        f"{name!r} has a Triton context but is not bound to any of its models ({known}); "
        f"bind this callable itself with Triton.bind()"
    )


def _model_info_or_none(fn: Callable[..., Any], instance: Any) -> ModelInfo | None:
    try:
        return get_model_config(fn, instance)
    except PyTritonTorchValidationError:
        return None


def _fn_name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))


def _wrap(func: InferFn, wrapper: Callable[[InferFn, Any, tuple[Any, ...], dict[str, Any]], Any]) -> InferFn:
    """Wrap ``func`` with a ``wrapt`` wrapper, so that methods bind and introspection keeps working."""
    if not callable(func):
        raise PyTritonTorchBadParameterError(
            f"a decorator was applied to {func!r}, which is not callable; decorate the infer function "
            f"(parametrised decorators such as @first_value need their arguments: @first_value('name'))"
        )
    return cast(InferFn, wrapt.FunctionWrapper(func, wrapper))


# --------------------------------------------------------------------------------------------
# Result kinds: plain value, awaitable, generator, async generator
# --------------------------------------------------------------------------------------------

_SYNC, _AWAITABLE, _GENERATOR, _ASYNC_GENERATOR = "value", "awaitable", "generator", "async generator"


def _kind(result: Any) -> str:
    if type(result) in (dict, list, tuple):  # the common case; skips the slower ABC checks
        return _SYNC
    if inspect.isasyncgen(result) or isinstance(result, AsyncIterator):
        return _ASYNC_GENERATOR
    if inspect.isgenerator(result) or isinstance(result, Iterator):
        return _GENERATOR
    if inspect.isawaitable(result):
        return _AWAITABLE
    return _SYNC


def _map_result(result: Any, convert: Callable[[Any], Any]) -> Any:
    """Apply ``convert`` to a result, or to each item a generator yields, keeping the result's kind."""
    kind = _kind(result)
    if kind == _SYNC:
        return convert(result)
    if kind == _AWAITABLE:
        return _await_then(result, convert)
    if kind == _GENERATOR:
        return _map_generator(result, convert)
    return _map_async_generator(result, convert)


async def _await_then(awaitable: Any, convert: Callable[[Any], Any]) -> Any:
    return convert(await awaitable)


def _map_generator(stream: Iterator[Any], convert: Callable[[Any], Any]) -> Iterator[Any]:
    try:
        for item in stream:
            yield convert(item)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


async def _map_async_generator(
    stream: AsyncIterator[Any], convert: Callable[[Any], Any]
) -> AsyncIterator[Any]:
    try:
        async for item in stream:
            yield convert(item)
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


def _combine(calls: Sequence[Callable[[], Any]], merge: Callable[[list[Any]], Any], what: str) -> Any:
    """Run several calls of one infer function and merge their results into a result of the same kind.

    Coroutines are awaited one after the other; generators advance in lock-step, every step
    merging one item of each (they must yield the same number of items).
    """
    first = calls[0]()
    if len(calls) == 1:
        return _map_result(first, lambda value: merge([value]))
    kind = _kind(first)
    rest = calls[1:]

    def call_next(call: Callable[[], Any]) -> Any:
        result = call()
        if _kind(result) != kind:
            raise PyTritonTorchValidationError(
                f"{what}: the infer function returned a {kind} for one call and a {_kind(result)} for "
                f"another; it must always return the same kind of result"
            )
        return result

    if kind == _SYNC:
        return merge([first, *(call_next(call) for call in rest)])
    if kind == _AWAITABLE:

        async def await_all() -> Any:
            values = [await first]
            for call in rest:
                values.append(await call_next(call))
            return merge(values)

        return await_all()
    if kind == _GENERATOR:

        def lock_step() -> Iterator[Any]:
            streams: list[Any] = [first]
            try:
                streams.extend(call_next(call) for call in rest)
                while True:
                    items, finished = [], 0
                    for stream in streams:
                        try:
                            items.append(next(stream))
                        except StopIteration:
                            finished += 1
                    if finished == len(streams):
                        return
                    if finished:
                        raise _uneven_streams(what, finished, len(streams))
                    yield merge(items)
            finally:
                for stream in streams:
                    close = getattr(stream, "close", None)
                    if close is not None:
                        close()

        return lock_step()

    async def async_lock_step() -> AsyncIterator[Any]:
        streams: list[Any] = [first]
        try:
            streams.extend(call_next(call) for call in rest)
            while True:
                items, finished = [], 0
                for stream in streams:
                    try:
                        items.append(await stream.__anext__())
                    except StopAsyncIteration:
                        finished += 1
                if finished == len(streams):
                    return
                if finished:
                    raise _uneven_streams(what, finished, len(streams))
                yield merge(items)
        finally:
            for stream in streams:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()

    return async_lock_step()


def _uneven_streams(what: str, finished: int, total: int) -> PyTritonTorchValidationError:
    return PyTritonTorchValidationError(
        f"{what}: the infer function was called {total} times and its streams ended after different "
        f"numbers of items ({finished} of {total} had finished); every call must yield the same number "
        f"of items so they can be merged"
    )


# --------------------------------------------------------------------------------------------
# Arrays and requests
# --------------------------------------------------------------------------------------------


def _request_batch_size(request: Mapping[str, Any]) -> int:
    """Rows in a request: the first input's first dimension (1 for a scalar or a request without inputs)."""
    for value in request.values():
        return _batching.rows(value)
    return 1


def _is_batched_array(value: Any) -> bool:
    return (isinstance(value, np.ndarray) or _batching.is_torch(value)) and value.ndim > 0


def _kwargs_inputs(kwargs: Mapping[str, Any]) -> dict[str, NDArray[Any]]:
    """Pick the keyword arguments that hold input batches (arrays with a batch axis)."""
    return {
        name: value
        for name, value in kwargs.items()
        if name not in _SPECIAL_KWARGS and _is_batched_array(value)
    }


def _is_requests_call(args: tuple[Any, ...]) -> bool:
    return bool(args) and isinstance(args[0], list | tuple) and all(isinstance(r, Mapping) for r in args[0])


def _replace_data(request: Mapping[str, Any], data: dict[str, Any]) -> Any:
    """Copy ``request`` with ``data`` as its inputs; a ``Request`` keeps its parameters and id."""
    if isinstance(request, Request):
        return request.with_data(data)  # keeps its cancellation flag (streams) too
    return data


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{type(value).__name__} of shape {tuple(shape)}"
    return type(value).__name__


def _as_outputs(result: Any, fn: Callable[..., Any], instance: Any, decorator: str) -> Outputs:
    """Turn a result into an outputs dict; a list/tuple maps to the declared outputs in order."""
    if type(result) is dict:  # the common case, before the slower ABC check
        return cast(Outputs, result)
    if isinstance(result, Mapping):
        return result if isinstance(result, dict) else dict(result)
    if isinstance(result, list | tuple):
        info = _model_info_or_none(fn, instance)
        if info is None:
            raise PyTritonTorchValidationError(
                f"{decorator}: {_fn_name(fn)} returned a {type(result).__name__}; mapping it to output names "
                f"needs the model's outputs, which are only known once the function is bound with "
                f"Triton.bind() (or return a dict of output name -> array)"
            )
        names = [spec.name for spec in info.outputs]
        if len(result) != len(names):
            raise PyTritonTorchValidationError(
                f"{decorator}: model {info.model_name!r}: {_fn_name(fn)} returned a {type(result).__name__} "
                f"of {len(result)} items; expected {len(names)}, one per declared output "
                f"({', '.join(map(str, names))})"
            )
        return {str(name): value for name, value in zip(names, result, strict=True)}
    raise PyTritonTorchValidationError(
        f"{decorator}: {_fn_name(fn)} returned {type(result).__name__}; expected a dict of output "
        f"name -> array (or a list/tuple in the order of the declared outputs)"
    )


# --------------------------------------------------------------------------------------------
# @batch and @sample
# --------------------------------------------------------------------------------------------


def _requests_arg(args: tuple[Any, ...], decorator: str, fn: Callable[..., Any]) -> list[Mapping[str, Any]]:
    if not args or not isinstance(args[0], list | tuple):
        got = type(args[0]).__name__ if args else "no positional argument"
        raise PyTritonTorchValidationError(
            f"{decorator}: {_fn_name(fn)} must be called with the list of requests as first positional "
            f"argument, got {got}; put {decorator} at the top of the decorator stack (only "
            f"@group_by_keys, @fill_optionals, @first_value and @triton_context may sit above it)"
        )
    requests = list(args[0])
    for index, request in enumerate(requests):
        if type(request) is not Request and not isinstance(request, Mapping):
            raise PyTritonTorchValidationError(
                f"{decorator}: request {index} is a {type(request).__name__}; expected a Request "
                f"(a mapping of input name -> array)"
            )
    return requests


def _concatenate_inputs(requests: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    names = list(requests[0].keys())
    expected = set(names)
    for index, request in enumerate(requests[1:], start=1):
        if set(request.keys()) != expected:
            raise PyTritonTorchValidationError(
                f"@batch: requests have different inputs: request 0 has {sorted(expected)}, request {index} "
                f"has {sorted(request.keys())}; use @fill_optionals or put @group_by_keys above @batch"
            )
    inputs: dict[str, Any] = {}
    for name in names:
        parts = [request[name] for request in requests]
        try:
            inputs[name] = _batching.gather(parts)
        except (ValueError, RuntimeError) as exc:
            shapes = ", ".join(str(tuple(getattr(part, "shape", ()))) for part in parts)
            raise PyTritonTorchValidationError(
                f"@batch: input {name!r} cannot be batched: its shapes in the requests are {shapes}; all but "
                f"the first dimension must match (pad the inputs, or group requests of the same shape with "
                f"@group_by_keys/@group_by_values) ({exc})"
            ) from exc
    return inputs


def _check_request_rows(request: Mapping[str, Any], index: int) -> int:
    size = _request_batch_size(request)
    for name, value in request.items():
        rows = _batching.rows(value)
        if rows != size:
            first = next(iter(request))
            raise PyTritonTorchValidationError(
                f"@batch: request {index}: input {name!r} has batch size {rows} but input {first!r} has "
                f"{size}; every input of a request must have the same first dimension"
            )
    return size


def _split_outputs(
    outputs: Outputs, sizes: Sequence[int], fn: Callable[..., Any], *, check: Callable[[], bool]
) -> list[Outputs]:
    """Cut batch outputs back into one dict per request.

    ``check()`` says whether a first dimension other than the batch total is an error; it is only
    asked on a mismatch, so the happy path never looks up the model.
    """

    def mismatch(name: str, value: Any, total: int) -> Exception | None:
        shape = getattr(value, "shape", None)
        if shape is None or len(shape) == 0:
            return PyTritonTorchValidationError(
                f"@batch: output {name!r} returned by {_fn_name(fn)} is {_describe(value)}; expected an "
                f"array whose first dimension is the batch size {total}"
            )
        if not check():
            return None
        return PyTritonTorchValidationError(
            f"@batch: output {name!r} returned by {_fn_name(fn)} has batch size {int(shape[0])} (shape "
            f"{tuple(shape)}); expected batch size {total}, the sum of the requests' batch sizes "
            f"{list(sizes)}"
        )

    return _batching.split(outputs, sizes, mismatch=mismatch)


def _batch_wrapper(wrapped: InferFn, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    requests = _requests_arg(args, "@batch", wrapped)
    if not requests:
        raise PyTritonTorchValidationError(f"@batch: {_fn_name(wrapped)} was called with no requests")
    sizes = [_check_request_rows(request, index) for index, request in enumerate(requests)]

    def check() -> bool:
        if len(requests) > 1:
            return True
        # Without batching, the single request's tensors have no batch axis to check outputs against.
        info = _model_info_or_none(wrapped, instance)
        return info is None or info.batching

    inputs = dict(requests[0]) if len(requests) == 1 else _concatenate_inputs(requests)
    call_kwargs = {**kwargs, **inputs}
    result = wrapped(*args[1:], **call_kwargs)

    def split(value: Any) -> list[Outputs]:
        return _split_outputs(_as_outputs(value, wrapped, instance, "@batch"), sizes, wrapped, check=check)

    return _map_result(result, split)


def batch(func: InferFn) -> InferFn:
    """Join all requests into one batch per input and pass the batches as keyword arguments.

    Each input is concatenated along axis 0 over the requests (all requests must have the same
    inputs: put :func:`group_by_keys` above ``@batch`` when they may not). The function returns a
    dict of output name -> batch, or a list/tuple of batches in the order of the model's declared
    outputs; every output's first dimension must equal the sum of the requests' batch sizes. The
    outputs are then cut back into one response per request.

    Generator functions (streaming models) yield such dicts; coroutine functions and async
    generators work the same way. Request parameters are not passed on.

    Example::

        @batch
        def infer(x, y):  # x: (total_batch, ...), y: (total_batch, ...)
            return {"sum": x + y}

        @batch
        def stream(prompt):  # decoupled model: one response per request and step
            for step in range(3):
                yield {"token": np.full((len(prompt), 1), step, dtype=np.int32)}

    Raises:
        PyTritonTorchValidationError: the requests have different inputs or shapes that cannot be
            joined, or an output's batch size does not match the requests.
    """
    return _wrap(func, _batch_wrapper)


def _sample_wrapper(wrapped: InferFn, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    requests = _requests_arg(args, "@sample", wrapped)
    if not requests:
        raise PyTritonTorchValidationError(f"@sample: {_fn_name(wrapped)} was called with no requests")
    rest = args[1:]

    def call_for(request: Mapping[str, Any]) -> Callable[[], Any]:
        return lambda: wrapped(*rest, **{**kwargs, **request})

    def merge(values: list[Any]) -> list[Outputs]:
        return [_as_outputs(value, wrapped, instance, "@sample") for value in values]

    return _combine([call_for(request) for request in requests], merge, "@sample")


def sample(func: InferFn) -> InferFn:
    """Call the function once per request, with that request's inputs as keyword arguments.

    The function returns a dict of outputs (or a list/tuple in the order of the declared outputs)
    for its request. Typical for models without batching, where each request is one sample.
    Generators, coroutine functions and async generators are supported; with several requests,
    their streams are merged step by step and must yield the same number of items.

    Example::

        @sample
        def infer(text):
            return {"length": np.array([len(text[0])], dtype=np.int64)}
    """
    return _wrap(func, _sample_wrapper)


# --------------------------------------------------------------------------------------------
# @group_by_keys
# --------------------------------------------------------------------------------------------


def _group_by_keys_wrapper(
    wrapped: InferFn, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    requests = _requests_arg(args, "@group_by_keys", wrapped)
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(tuple(sorted(request.keys())), []).append(index)
    if len(groups) <= 1:
        return wrapped(*args, **kwargs)
    rest = args[1:]
    members = list(groups.values())

    def call_for(indices: list[int]) -> Callable[[], Any]:
        return lambda: wrapped([requests[i] for i in indices], *rest, **kwargs)

    def merge(values: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        for indices, value in zip(members, values, strict=True):
            if not isinstance(value, list | tuple) or len(value) != len(indices):
                got = f"{len(value)} responses" if isinstance(value, list | tuple) else type(value).__name__
                raise PyTritonTorchValidationError(
                    f"@group_by_keys: {_fn_name(wrapped)} got a group of {len(indices)} requests and "
                    f"returned {got}; expected a list with one response per request"
                )
            for index, response in zip(indices, value, strict=True):
                responses[index] = response
        return responses

    return _combine([call_for(indices) for indices in members], merge, "@group_by_keys")


def group_by_keys(func: InferFn) -> InferFn:
    """Call the function once per group of requests that have the same set of inputs.

    Requests missing an optional input cannot be joined by :func:`batch` with requests that have
    it; ``@group_by_keys`` above ``@batch`` splits them into consistent groups and puts the
    responses back in request order. ``Request`` objects (with their parameters) are passed as is.

    Example::

        @group_by_keys
        @batch
        def infer(text, temperature=None):
            ...
    """
    return _wrap(func, _group_by_keys_wrapper)


# --------------------------------------------------------------------------------------------
# @group_by_values and ConstantPadder
# --------------------------------------------------------------------------------------------


def _sample_key(value: Any) -> Any:
    """Make a hashable key for one sample of an input; bytes keep their trailing NULs."""
    if _batching.is_torch(value):
        value = (
            value.detach().cpu().float().numpy()
            if str(value.dtype) == "torch.bfloat16"
            else value.detach().cpu().numpy()
        )
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "O":
            return ("O", value.shape, tuple(_sample_key(item) for item in value.flat))
        return (value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, np.generic):
        return (value.dtype.str, value.tobytes())
    try:
        hash(value)
    except TypeError:
        return ("repr", repr(value))
    return value


def _take_rows(value: Any, order: NDArray[Any]) -> Any:
    if isinstance(value, np.ndarray):
        return value[order]
    import torch

    return value[torch.as_tensor(order, device=value.device)]


def group_by_values(*keys: str, pad_fn: PadFn | None = None) -> Callable[[InferFn], InferFn]:
    """Split a batch into groups of samples with equal values of ``keys`` and call the function per group.

    Use it below :func:`batch`: it receives the batched inputs, calls the function once per
    distinct combination of the ``keys`` inputs' values (each call gets the rows of that group,
    of every input), and puts the outputs back together in the original row order. Keys that are
    not among the inputs of a call are ignored. Outputs of the groups must have the same shape
    beyond the first axis; give ``pad_fn`` (for example :class:`ConstantPadder`) to pad them first.

    Example::

        @batch
        @group_by_values("temperature", pad_fn=ConstantPadder(0))
        def infer(prompt, temperature):
            # every row of this call has the same temperature
            return {"tokens": generate(prompt, float(temperature[0, 0]))}

    Args:
        keys: Names of the inputs whose values form the groups.
        pad_fn: Called with the list of the groups' outputs; returns them padded to compatible shapes.

    Raises:
        PyTritonTorchBadParameterError: ``keys`` are not strings, ``pad_fn`` is not callable, or the
            decorator is placed above ``@batch``.
        PyTritonTorchValidationError: outputs of the groups cannot be merged.
    """
    for key in keys:
        if not isinstance(key, str):
            raise PyTritonTorchBadParameterError(
                f"@group_by_values: keys must be input names (str), got {key!r} ({type(key).__name__}); "
                f"note that the function to decorate is not passed here: write @group_by_values('name')"
            )
        if key in _SPECIAL_KWARGS:
            raise PyTritonTorchBadParameterError(
                f"@group_by_values: {key!r} is not a model input and cannot be a key"
            )
    if pad_fn is not None and not callable(pad_fn):
        raise PyTritonTorchBadParameterError(
            f"@group_by_values: pad_fn must be callable (e.g. ConstantPadder()), got {type(pad_fn).__name__}"
        )

    def wrapper(wrapped: InferFn, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        inputs = _kwargs_inputs(kwargs)
        if not inputs:
            if _is_requests_call(args):
                raise PyTritonTorchBadParameterError(
                    f"@group_by_values: {_fn_name(wrapped)} was called with a list of requests; put "
                    f"@group_by_values below @batch so that it receives the batched inputs"
                )
            return wrapped(*args, **kwargs)
        first_name, first = next(iter(inputs.items()))
        size = int(first.shape[0])
        for name, value in inputs.items():
            if int(value.shape[0]) != size:
                raise PyTritonTorchValidationError(
                    f"@group_by_values: input {name!r} has batch size {int(value.shape[0])} but input "
                    f"{first_name!r} has {size}"
                )
        present = [key for key in keys if key in inputs]
        groups: dict[Any, list[int]] = {}
        for row in range(size):
            sample_key = tuple(_sample_key(inputs[key][row]) for key in present)
            groups.setdefault(sample_key, []).append(row)
        members = [np.asarray(rows, dtype=np.intp) for rows in groups.values()]

        def group_kwargs(rows: NDArray[Any] | None) -> dict[str, Any]:
            if rows is None:
                return kwargs
            return {name: (value[rows] if name in inputs else value) for name, value in kwargs.items()}

        def call_for(rows: NDArray[Any] | None) -> Callable[[], Any]:
            return lambda: wrapped(*args, **group_kwargs(rows))

        def merge(values: list[Any]) -> Outputs:
            results = [_as_outputs(value, wrapped, instance, "@group_by_values") for value in values]
            if pad_fn is not None:
                results = [dict(result) for result in pad_fn(results)]
            if len(results) == 1:
                return results[0]
            return _merge_groups(results, members, size, wrapped)

        if len(members) == 1:
            return _combine([call_for(None)], merge, "@group_by_values")
        return _combine([call_for(rows) for rows in members], merge, "@group_by_values")

    def decorate(func: InferFn) -> InferFn:
        return _wrap(func, wrapper)

    return decorate


def _merge_groups(
    results: Sequence[Outputs], members: Sequence[NDArray[Any]], size: int, fn: Callable[..., Any]
) -> Outputs:
    names = list(results[0].keys())
    for index, result in enumerate(results[1:], start=1):
        if set(result) != set(names):
            raise PyTritonTorchValidationError(
                f"@group_by_values: groups returned different outputs: group 0 returned {sorted(names)}, "
                f"group {index} returned {sorted(result)}; every call must return the same outputs"
            )
    positions = np.concatenate(members)
    order = np.empty(size, dtype=np.intp)
    order[positions] = np.arange(size, dtype=np.intp)
    merged: Outputs = {}
    for name in names:
        parts = [result[name] for result in results]
        for rows, part in zip(members, parts, strict=True):
            shape = getattr(part, "shape", None)
            if shape is None or len(shape) == 0 or int(shape[0]) != len(rows):
                got = f"batch size {int(shape[0])}" if shape is not None and len(shape) else _describe(part)
                raise PyTritonTorchValidationError(
                    f"@group_by_values: output {name!r} returned by {_fn_name(fn)} for a group of "
                    f"{len(rows)} rows has {got}; expected batch size {len(rows)}"
                )
        try:
            joined = _batching.gather(parts)
        except (ValueError, RuntimeError) as exc:
            shapes = ", ".join(str(tuple(part.shape)) for part in parts)
            raise PyTritonTorchValidationError(
                f"@group_by_values: output {name!r} has shapes {shapes} in the groups, which cannot be "
                f"joined; pass pad_fn=ConstantPadder() to pad them to a common shape ({exc})"
            ) from exc
        merged[name] = _take_rows(joined, order)
    return merged


class ConstantPadder:
    """Pad arrays of several batches with a constant so that they can be joined into one batch.

    Called with a list of dicts (name -> array with a batch axis), it returns the same dicts where
    each name's arrays are padded at the end of every dimension but the first to the largest size
    among the dicts. Bytes/string arrays are padded with empty values; byte strings padded into
    an object array keep their trailing NULs. Used as ``pad_fn`` of :func:`group_by_values`.

    Example::

        padder = ConstantPadder(pad_value=-1)
        padded = padder([{"y": np.ones((1, 2))}, {"y": np.ones((2, 3))}])
        # padded[0]["y"] -> [[1., 1., -1.]], shape (1, 3)

    Args:
        pad_value: Value used for numeric and boolean arrays.
    """

    def __init__(self, pad_value: Any = 0) -> None:
        self.pad_value = pad_value

    def __repr__(self) -> str:
        return f"ConstantPadder(pad_value={self.pad_value!r})"

    def __call__(self, batches_list: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Return ``batches_list`` with each name's arrays padded to one shape (except the first axis).

        Raises:
            PyTritonTorchValidationError: arrays of one name have different numbers of dimensions
                or dtypes that cannot be padded into one.
        """
        padded = [dict(batch_) for batch_ in batches_list]
        names: dict[str, None] = {}
        for batch_ in padded:
            names.update(dict.fromkeys(batch_))
        for name in names:
            holders = [batch_ for batch_ in padded if name in batch_]
            arrays = [
                np.asarray(batch_[name]) if not isinstance(batch_[name], np.ndarray) else batch_[name]
                for batch_ in holders
            ]
            dims = {array.ndim for array in arrays}
            if len(dims) != 1 or 0 in dims:
                shapes = ", ".join(str(array.shape) for array in arrays)
                raise PyTritonTorchValidationError(
                    f"ConstantPadder: {name!r} has shapes {shapes}; expected arrays with a batch axis and "
                    f"the same number of dimensions"
                )
            target = tuple(max(array.shape[axis] for array in arrays) for axis in range(1, arrays[0].ndim))
            dtype = _common_pad_dtype(name, [array.dtype for array in arrays])
            fill: Any = self.pad_value
            if dtype.kind in "OS":
                fill = b""
            elif dtype.kind == "U":
                fill = ""
            for holder, array in zip(holders, arrays, strict=True):
                if array.shape[1:] == target and array.dtype == dtype:
                    holder[name] = array
                    continue
                out = np.full((array.shape[0], *target), fill, dtype=dtype)
                region = (slice(None), *(slice(0, extent) for extent in array.shape[1:]))
                out[region] = array
                holder[name] = out
        return padded


def _common_pad_dtype(name: str, dtypes: Sequence[np.dtype[Any]]) -> np.dtype[Any]:
    kinds = {dtype.kind for dtype in dtypes}
    if "O" in kinds and kinds <= {"O", "S"}:
        return np.dtype(object)
    if kinds in ({"S"}, {"U"}):
        return max(dtypes, key=lambda dtype: dtype.itemsize)
    if len(set(dtypes)) == 1:
        return dtypes[0]
    raise PyTritonTorchValidationError(
        f"ConstantPadder: arrays of {name!r} have different dtypes "
        f"({', '.join(sorted({str(d) for d in dtypes}))}); return the same dtype from every group"
    )


# --------------------------------------------------------------------------------------------
# @fill_optionals
# --------------------------------------------------------------------------------------------


def _shape_matches(shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    return len(shape) == len(expected) and all(
        want == -1 or got == want for got, want in zip(shape, expected, strict=True)
    )


def _is_bytes_dtype(dtype: Any) -> bool:
    return np.dtype(dtype).kind in "OS"


def fill_optionals(**defaults: NDArray[Any]) -> Callable[[InferFn], InferFn]:
    """Fill inputs that a request left out with default values.

    Defaults are numpy arrays *without* the batch axis, matching the input's declared dtype and
    shape; for batching models they are repeated to the request's batch size. Put
    ``@fill_optionals`` at the top of the stack, so that :func:`group_by_keys`/:func:`batch`
    below it see complete requests and can form larger batches. Requests are copied (with their
    parameters), never changed in place. Used below ``@batch`` it fills missing keyword inputs.

    Example::

        @fill_optionals(temperature=np.array([0.7], dtype=np.float32))
        @batch
        def infer(prompt, temperature):
            ...

    Raises:
        PyTritonTorchBadParameterError: a default is not a numpy array, is not a declared input, or
            its dtype or shape differs from the input's (checked on the first call, when the model
            is known).
    """
    prepared: dict[str, NDArray[Any]] = {}
    for name, value in defaults.items():
        if not isinstance(value, np.ndarray):
            raise PyTritonTorchBadParameterError(
                f"@fill_optionals: the default of {name!r} is a {type(value).__name__}; expected a numpy "
                f"array without the batch axis, e.g. np.array([...], dtype=...)"
            )
        # BYTES travel as object arrays of bytes; fixed-width 'S' arrays would drop trailing NULs later on.
        prepared[name] = value.astype(object) if value.dtype.kind == "S" else value
    checked: dict[int, ModelInfo] = {}

    def verify(info: ModelInfo) -> None:
        if checked.get(id(info)) is info:
            return
        specs = {spec.name: spec for spec in info.inputs}
        unknown = sorted(set(defaults) - set(specs))
        if unknown:
            raise PyTritonTorchBadParameterError(
                f"@fill_optionals: model {info.model_name!r} has no input(s) "
                f"{', '.join(map(repr, unknown))}; declared inputs are "
                f"{', '.join(repr(name) for name in specs) or 'none'}"
            )
        for name, value in defaults.items():
            spec = specs[name]
            expected = np.dtype(spec.dtype)
            if _is_bytes_dtype(expected):
                dtype_ok = _is_bytes_dtype(value.dtype)
                want = "bytes (an object array of bytes)"
            else:
                dtype_ok = value.dtype == expected
                want = str(expected)
            if not dtype_ok:
                raise PyTritonTorchBadParameterError(
                    f"@fill_optionals: model {info.model_name!r}: the default of input {name!r} has dtype "
                    f"{value.dtype}; expected {want}, the input's declared dtype"
                )
            if not _shape_matches(tuple(value.shape), tuple(spec.shape)):
                raise PyTritonTorchBadParameterError(
                    f"@fill_optionals: model {info.model_name!r}: the default of input {name!r} has shape "
                    f"{tuple(value.shape)}; expected {tuple(spec.shape)} (-1: any size), the input's "
                    f"declared shape without the batch axis"
                )
        checked[id(info)] = info

    def filled(value: NDArray[Any], rows: int | None) -> NDArray[Any]:
        if rows is None:
            return value.copy()
        return np.repeat(value[np.newaxis, ...], rows, axis=0)

    def wrapper(wrapped: InferFn, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        info = get_model_config(wrapped, instance)
        verify(info)
        if _is_requests_call(args):
            requests = []
            for request in args[0]:
                missing = [name for name in prepared if name not in request]
                if not missing:
                    requests.append(request)
                    continue
                rows = _request_batch_size(request) if info.batching else None
                data = dict(request)
                for name in missing:
                    data[name] = filled(prepared[name], rows)
                requests.append(_replace_data(request, data))
            return wrapped(requests, *args[1:], **kwargs)
        inputs = _kwargs_inputs(kwargs)
        batch_rows: int | None = None
        if info.batching:
            batch_rows = int(next(iter(inputs.values())).shape[0]) if inputs else 1
        new_kwargs = dict(kwargs)
        for name, value in prepared.items():
            if name not in new_kwargs:
                new_kwargs[name] = filled(value, batch_rows)
        return wrapped(*args, **new_kwargs)

    def decorate(func: InferFn) -> InferFn:
        return _wrap(func, wrapper)

    return decorate


# --------------------------------------------------------------------------------------------
# @first_value
# --------------------------------------------------------------------------------------------


def _all_rows_equal(values: NDArray[Any]) -> bool:
    if values.ndim == 0 or values.shape[0] <= 1:
        return True
    head, rest = values[:1], values[1:]
    equal = np.asarray(rest == head)
    if equal.shape != rest.shape:  # elementwise comparison failed (e.g. unsized objects)
        return all(np.array_equal(row, values[0]) for row in rest)
    if values.dtype.kind in "fc":
        equal = equal | (np.isnan(rest) & np.isnan(head))
    return bool(np.all(equal))


def first_value(
    *keys: str, squeeze_single_values: bool = True, strict: bool = True
) -> Callable[[InferFn], InferFn]:
    """Replace the listed inputs with their first row (a per-request setting sent with every sample).

    Works below :func:`batch` (on the batched keyword inputs) or on a function that takes the
    list of requests (each request's inputs are replaced; requests are copied with their
    parameters). A first row whose dimensions are all 1 becomes a scalar when
    ``squeeze_single_values`` is set. With ``strict``, every row must hold the same value.
    The model must have batching enabled.

    Example::

        @batch
        @first_value("temperature")
        def infer(prompt, temperature):  # temperature: np.float32 scalar
            ...

    Raises:
        PyTritonTorchBadParameterError: a key is not a string or is a reserved name, or the model
            does not batch.
        PyTritonTorchValidationError: with ``strict``, the rows of an input differ.
    """
    for key in keys:
        if not isinstance(key, str):
            raise PyTritonTorchBadParameterError(
                f"@first_value: keys must be input names (str), got {key!r} ({type(key).__name__}); "
                f"note that the function to decorate is not passed here: write @first_value('name')"
            )
    reserved = sorted(set(keys) & _SPECIAL_KWARGS)
    if reserved:
        raise PyTritonTorchBadParameterError(
            f"@first_value: {', '.join(map(repr, reserved))} cannot be used as key(s): they are reserved for "
            f"the Triton context, not model inputs"
        )

    def first_of(name: str, values: Any) -> Any:
        if _batching.is_torch(values):
            return _first_of_tensor(name, values)
        if not isinstance(values, np.ndarray):
            return values  # already a single value
        if values.ndim == 0:
            return values[()] if squeeze_single_values else values
        if values.shape[0] == 0:
            raise PyTritonTorchValidationError(
                f"@first_value: input {name!r} has no rows to take a first value from"
            )
        if strict and not _all_rows_equal(values):
            shown = " ".join(np.array2string(values, threshold=20, separator=", ").split())
            raise PyTritonTorchValidationError(
                f"@first_value: the rows of input {name!r} are not all equal ({shown}); expected one value "
                f"for the whole request, or use @first_value(..., strict=False) to take the first row anyway"
            )
        head = values[0]
        if squeeze_single_values and isinstance(head, np.ndarray) and all(dim == 1 for dim in head.shape):
            return head.reshape(())[()]
        return head

    def _first_of_tensor(name: str, values: Any) -> Any:
        if values.ndim == 0:
            return values
        if values.shape[0] == 0:
            raise PyTritonTorchValidationError(
                f"@first_value: input {name!r} has no rows to take a first value from"
            )
        head = values[0]
        if strict and not bool((values == head).all()):
            raise PyTritonTorchValidationError(
                f"@first_value: the rows of input {name!r} are not all equal; expected one value for the "
                f"whole request, or use @first_value(..., strict=False) to take the first row anyway"
            )
        if squeeze_single_values and all(dim == 1 for dim in head.shape):
            return head.reshape(())
        return head

    def replaced(data: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(data)
        for name in keys:
            if name in out:
                out[name] = first_of(name, out[name])
        return out

    def wrapper(wrapped: InferFn, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        info = get_model_config(wrapped, instance)
        if not info.batching:
            raise PyTritonTorchBadParameterError(
                f"@first_value: model {info.model_name!r} does not batch; the decorator takes the first row "
                f"of batched inputs, so use it only with ModelConfig(batching=True)"
            )
        if any(name not in _SPECIAL_KWARGS for name in kwargs) or not _is_requests_call(args):
            return wrapped(*args, **replaced(kwargs))
        requests = [_replace_data(request, replaced(request)) for request in args[0]]
        return wrapped(requests, *args[1:], **kwargs)

    def decorate(func: InferFn) -> InferFn:
        return _wrap(func, wrapper)

    return decorate


# --------------------------------------------------------------------------------------------
# @pad_batch and @triton_context
# --------------------------------------------------------------------------------------------


def _pad_rows(value: NDArray[Any], target: int) -> NDArray[Any]:
    extra = np.repeat(value[-1:], target - value.shape[0], axis=0)
    return np.concatenate([value, extra], axis=0)


def _trim_rows(value: Any, padded: int, rows: int) -> Any:
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) and int(shape[0]) == padded:
        return value[:rows]
    return value


def _pad_batch_wrapper(wrapped: InferFn, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    info = get_model_config(wrapped, instance)
    if not info.batching:
        raise PyTritonTorchBadParameterError(
            f"@pad_batch: model {info.model_name!r} does not batch; use @pad_batch only with batching models"
        )
    inputs = _kwargs_inputs(kwargs)
    if not inputs:
        if _is_requests_call(args):
            raise PyTritonTorchBadParameterError(
                f"@pad_batch: {_fn_name(wrapped)} was called with a list of requests; put @pad_batch "
                f"below @batch"
            )
        return wrapped(*args, **kwargs)
    rows = int(next(iter(inputs.values())).shape[0])
    sizes = sorted(
        {size for size in info.preferred_batch_sizes if size <= info.max_batch_size} | {info.max_batch_size}
    )
    position = bisect_left(sizes, rows)
    if rows == 0 or position == len(sizes) or sizes[position] == rows:
        return wrapped(*args, **kwargs)
    target = sizes[position]
    padded_kwargs = dict(kwargs)
    for name, value in inputs.items():
        padded_kwargs[name] = _pad_rows(value, target)
    result = wrapped(*args, **padded_kwargs)

    def trim(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {name: _trim_rows(item, target, rows) for name, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(_trim_rows(item, target, rows) for item in value)
        return value

    return _map_result(result, trim)


def pad_batch(func: InferFn) -> InferFn:
    """Pad the batched inputs to the next batch size the model is configured for.

    Use it below :func:`batch`. The inputs' last row is repeated up to the smallest of the
    dynamic batcher's preferred batch sizes (``DynamicBatcher(preferred_batch_size=[...])``) and
    ``max_batch_size`` that holds the batch. Outputs with the padded batch size are cut back to the
    real one, so ``@batch`` above gets matching sizes.

    Example::

        @batch
        @pad_batch
        def infer(x):  # x always has max_batch_size rows
            return {"y": compiled_model(x)}

    Raises:
        PyTritonTorchBadParameterError: the model does not batch, or the decorator is above ``@batch``.
    """
    return _wrap(func, _pad_batch_wrapper)


def _triton_context_wrapper(
    wrapped: InferFn, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    return wrapped(*args, **{**kwargs, TRITON_CONTEXT_KWARG: get_context(wrapped, instance)})


def triton_context(func: InferFn) -> InferFn:
    """Pass the binding's :class:`TritonContext` as the keyword argument ``triton_context``.

    ``triton_context.model_configs`` maps bound callables to their :class:`ModelInfo`
    (``triton_context.info_for(fn)`` looks one up).

    Example::

        @triton_context
        @batch
        def infer(x, triton_context):
            info = triton_context.info_for(infer)
            return {"y": x, "z": np.full((len(x), 1), info.max_batch_size)}

    Raises:
        PyTritonTorchValidationError: the function was not bound with ``Triton.bind``.
    """
    return _wrap(func, _triton_context_wrapper)
