"""Warm-up samples (``ModelConfig.model_warmup``) run in this process, before Triton loads the model.

tritonserver 2.51 runs a model's warm-up while it initialises the model instance; when a sample
fails, it tears the half-built instance down, and that clean-up path sometimes crashes the whole
server (SIGSEGV in ``TritonModelInstance::~TritonModelInstance`` -> ``StopBackendThread``, seen on
the 3rd to 13th failing load). So the samples never reach Triton: they are run here, through the
same calls and output checks as a served batch, on every instance's callable; a failure fails
``bind`` (or the repository model's load) with the sample's name and error before Triton hears
of the model. Repository models read ``input_data_file`` samples through a reader that their
folder gives (:data:`ReadFile`); the bytes are decoded here as Triton does (raw row-major
elements; BYTES as 4-byte little-endian length + bytes per element). Bound models have no model
folder: their ``input_data_file`` is a ``.npy`` file (a path, relative to the working folder), as
in PyTriton; it holds one sample (the input's shape) or rows of samples (``(n, *shape)``), and
request ``i`` of the sample gets row ``i % n``.

Example::

    run_warmups(model, loop)  # raises PyTritonTorchModelError when a sample fails
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ._channel._validate import check_responses
from ._channel._worker import EventLoopThread
from ._context import ModelInfo
from ._dtypes import spec_to_triton, triton_to_numpy
from ._types import Request
from .exceptions import PyTritonTorchError, PyTritonTorchModelError, PyTritonTorchValidationError
from .model_config import ModelWarmup, WarmupInput

ReadFile = Callable[[str], bytes]
"""Gives the bytes of a sample's ``input_data_file``; raises PyTritonTorchError saying why it cannot
(the message need not name the model, sample or input: they are put before it)."""

LoadNpy = Callable[[str], np.ndarray]
"""Gives the array of a bound model's ``.npy`` ``input_data_file``; raises as :data:`ReadFile`."""


def run_warmups(
    info: ModelInfo,
    infer_fns: list[Callable[..., Any]],
    warmups: list[ModelWarmup],
    loop: EventLoopThread,
    *,
    strict: bool,
    read_file: ReadFile | None = None,
) -> None:
    """Run each sample ``count`` times on every instance's callable; raise on the first failure.

    ``read_file`` reads ``input_data_file`` samples (each file once); without it they name
    ``.npy`` files (each loaded once).
    """
    rng = np.random.default_rng()
    files: ReadFile | LoadNpy = functools.cache(read_file) if read_file is not None else functools.cache(_load_npy)
    for warmup in warmups:
        for _ in range(max(1, warmup.count)):
            for fn in infer_fns:
                requests = _requests(info, warmup, rng, files, npy=read_file is None)
                try:
                    _call(info, fn, requests, loop, strict=strict)
                except Exception as exc:
                    raise PyTritonTorchModelError(
                        f"model {info.model_name!r} failed to load: warm-up sample {warmup.name!r} "
                        f"failed: {type(exc).__name__}: {exc}"
                    ) from exc


def _requests(
    info: ModelInfo, warmup: ModelWarmup, rng: np.random.Generator, files: ReadFile | LoadNpy, *, npy: bool
) -> list[Request]:
    """``batch_size`` requests (as Triton makes them: one sample each, batch dim 1 when batching)."""
    where = f"model {info.model_name!r}: warm-up sample {warmup.name!r}"
    specs = {tensor.name or "": tensor for tensor in info.inputs}
    unknown = sorted(set(warmup.inputs) - set(specs))
    if unknown:
        raise PyTritonTorchValidationError(
            f"{where} names unknown input(s) {', '.join(map(repr, unknown))}; the model's inputs "
            f"are {', '.join(map(repr, sorted(specs)))}"
        )
    missing = sorted(n for n, t in specs.items() if not t.optional and n not in warmup.inputs)
    if missing:
        raise PyTritonTorchValidationError(f"{where} lacks the input(s) {', '.join(map(repr, missing))}")
    for name, spec in warmup.inputs.items():
        declared = specs[name]
        wanted, given = (
            spec_to_triton(declared.dtype),
            spec_to_triton(spec.dtype, what=f"{where} input {name!r}"),
        )
        if given != wanted:
            raise PyTritonTorchValidationError(
                f"{where} input {name!r} has dtype {given}; the model declares {wanted}"
            )
        shape = tuple(spec.shape)
        if len(shape) != len(declared.shape) or any(
            d != w and w != -1 for d, w in zip(shape, declared.shape, strict=True)
        ):
            raise PyTritonTorchValidationError(
                f"{where} input {name!r} has shape {shape}; the model declares {tuple(declared.shape)}"
            )
    if info.max_batch_size and not 1 <= warmup.batch_size <= info.max_batch_size:
        raise PyTritonTorchValidationError(
            f"model {info.model_name!r}: warm-up sample {warmup.name!r} has batch_size="
            f"{warmup.batch_size}; expected 1..{info.max_batch_size} (max_batch_size)"
        )
    count = max(1, warmup.batch_size)
    return [
        Request(
            {
                name: _array(info, warmup, name, spec, rng, files, index=index, npy=npy)
                for name, spec in warmup.inputs.items()
            }
        )
        for index in range(count)
    ]


def _array(
    info: ModelInfo,
    warmup: ModelWarmup,
    name: str,
    spec: WarmupInput,
    rng: np.random.Generator,
    files: ReadFile | LoadNpy,
    *,
    index: int,
    npy: bool,
) -> np.ndarray:
    where = f"model {info.model_name!r}: warm-up sample {warmup.name!r} input {name!r}"
    shape = ((1,) if info.max_batch_size else ()) + tuple(int(d) for d in spec.shape)
    if any(d < 0 for d in shape):
        raise PyTritonTorchValidationError(f"{where}: shape {tuple(spec.shape)} must not have -1 dims")
    dtype = triton_to_numpy(spec_to_triton(spec.dtype, what=where))
    if spec.input_data_file:
        what = f"{where}: input_data_file {spec.input_data_file!r}"
        try:
            data = files(spec.input_data_file)
        except PyTritonTorchError as exc:
            raise type(exc)(f"{what}: {exc.message}") from None
        if npy:
            assert isinstance(data, np.ndarray)
            return npy_sample(data, index, tuple(spec.shape), dtype, what).reshape(shape)
        assert isinstance(data, bytes)
        return decode_file(data, dtype, shape, what)
    if dtype == np.object_:
        return np.full(shape, b"", dtype=object)
    if not spec.random_data:
        return np.zeros(shape, dtype=dtype)
    if dtype.kind == "f" or dtype.kind == "V":
        return rng.random(shape, dtype=np.float32).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    info_int = np.iinfo(dtype)
    return rng.integers(info_int.min, info_int.max, shape, dtype=dtype, endpoint=True)


def _load_npy(path: str) -> np.ndarray:
    """A ``.npy`` file's array; pickled (object) arrays are refused, they could run code."""
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except OSError as exc:
        raise PyTritonTorchValidationError(f"cannot read the .npy file: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise PyTritonTorchValidationError(
            f"not a .npy array without pickled objects ({exc}); save BYTES samples as np.bytes_ arrays"
        ) from None


def npy_sample(data: np.ndarray, index: int, shape: tuple[int, ...], dtype: np.dtype, where: str) -> np.ndarray:
    """Request ``index``'s sample of the per-sample ``shape`` from a ``.npy`` array, as ``dtype``.

    The array is one sample (``shape``) or rows of samples (``(n, *shape)``, cycled through).
    """
    shape = tuple(int(d) for d in shape)
    if data.shape == shape:
        sample = data
    elif data.ndim == len(shape) + 1 and data.shape[1:] == shape and data.shape[0] > 0:
        sample = data[index % data.shape[0]]
    else:
        raise PyTritonTorchValidationError(
            f"{where}: the file holds shape {data.shape}; expected {shape} or (n, {', '.join(map(str, shape))})"
        )
    if dtype == np.object_:
        if data.dtype.kind not in "SU":
            raise PyTritonTorchValidationError(
                f"{where}: the file holds {data.dtype}; a BYTES input needs a bytes (np.bytes_) or str array"
            )
        out = np.empty(sample.size, dtype=object)
        out[:] = [_to_bytes(item) for item in sample.reshape(-1).tolist()]
        return out.reshape(sample.shape)
    try:
        return np.array(sample.astype(dtype))
    except (TypeError, ValueError) as exc:
        raise PyTritonTorchValidationError(f"{where}: cannot convert the file's {data.dtype} data: {exc}") from None


def _to_bytes(item: bytes | str) -> bytes:
    return item.encode() if isinstance(item, str) else item


def decode_file(data: bytes, dtype: np.dtype, shape: tuple[int, ...], where: str) -> np.ndarray:
    """A warm-up tensor from a data file's bytes, read as Triton reads them.

    Numeric types: the raw row-major elements; a longer file is fine (its first bytes are used),
    a shorter one is refused. BYTES: each element is a 4-byte little-endian length and the bytes.
    """
    count = int(np.prod(shape, dtype=np.int64))
    if dtype != np.object_:
        needed = count * dtype.itemsize
        if len(data) < needed:
            raise PyTritonTorchValidationError(
                f"{where}: expected at least {needed} bytes ({count} {spec_to_triton(dtype)} element(s)), "
                f"the file has {len(data)}"
            )
        return np.frombuffer(data, dtype=dtype, count=count).reshape(shape).copy()
    items: list[bytes] = []
    offset = 0
    for index in range(count):
        if offset + 4 > len(data):
            raise PyTritonTorchValidationError(
                f"{where}: expected {count} BYTES element(s) (4-byte length + data each), the file "
                f"ends after {index}"
            )
        length = int.from_bytes(data[offset : offset + 4], "little")
        offset += 4
        if offset + length > len(data):
            raise PyTritonTorchValidationError(
                f"{where}: BYTES element {index} declares {length} bytes but only {len(data) - offset} "
                "remain in the file"
            )
        items.append(data[offset : offset + length])
        offset += length
    array = np.empty(count, dtype=object)
    array[:] = items
    return array.reshape(shape)


def _call(
    info: ModelInfo, fn: Callable[..., Any], requests: list[Request], loop: EventLoopThread, *, strict: bool
) -> None:
    """What the worker does with a batch, minus the channel: call, await or iterate, check outputs."""
    result = fn(requests)
    if info.decoupled:
        if inspect.isasyncgen(result):
            chunks: Iterator[Any] = loop.iterate(result)
        elif inspect.isgenerator(result) or isinstance(result, Iterator):
            chunks = result
        else:
            chunks = iter([loop.run(result) if inspect.isawaitable(result) else result])
        for chunk in chunks:
            check_responses(info, requests, chunk, strict=strict)
        return
    if type(result) is not list and inspect.isawaitable(result):
        result = loop.run(result)
    check_responses(info, requests, result, strict=strict)
