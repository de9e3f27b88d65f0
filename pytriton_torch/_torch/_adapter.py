"""The torch-tensor opt-in: infer functions that take and return torch tensors.

``Triton.bind(..., tensors="torch", device=...)`` wraps each infer callable in
:class:`TorchInfer`. Inputs become tensors viewing the request buffers (``torch.from_numpy`` on
the shared-memory mapping: no copy) and, for a CUDA device, are copied to it with non-blocking
copies from page-locked memory: the worker registers every shared-memory segment it maps with
the CUDA runtime (:class:`PinnedSegments`). Each instance runs on its own CUDA stream, which is
synchronised before the answer leaves, so CUDA errors surface on the batch that caused them.
"""

from __future__ import annotations

import contextlib
import ctypes
import inspect
import logging
import mmap
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import numpy as np
import torch

from .._dtypes import wire_to_torch
from .._model import PinningInfer
from .._types import Request
from ..model_config import DeviceKind
from ._errors import translate

LOGGER = logging.getLogger("pytriton_torch.torch")


def resolve_device(device: str | torch.device | DeviceKind | None) -> torch.device:
    """``"auto"`` -> cuda if available else cpu; ``None`` -> cpu; a DeviceKind as its device type."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, DeviceKind):
        device = {DeviceKind.KIND_AUTO: "auto", DeviceKind.KIND_CPU: "cpu", DeviceKind.KIND_GPU: "cuda"}[device]
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        from ..exceptions import PyTritonTorchValidationError

        raise PyTritonTorchValidationError(
            f"device {resolved} requested but CUDA is not available on this machine"
        )
    return resolved


def resolve_devices(device: Any, count: int, what: str = "") -> list[torch.device]:
    """One device per instance: a single device (or ``"auto"``) for all, a list round-robin."""
    choices = list(device) if isinstance(device, list | tuple) else [device]
    if not choices:
        from ..exceptions import PyTritonTorchValidationError

        raise PyTritonTorchValidationError(f"{what}device list is empty; give at least one device")
    devices = [resolve_device(choice) for choice in choices]
    return [devices[i % len(devices)] for i in range(count)]


class PinnedSegments:
    """Registers mapped shared-memory segments with the CUDA runtime (page-locks them).

    Host-to-device copies from registered memory are true asynchronous DMA; from ordinary
    pageable memory CUDA first stages them through a bounce buffer, synchronously.
    """

    def __init__(self) -> None:
        self._registered: dict[int, int] = {}  # id(mmap) -> address

    def on_map(self, mm: mmap.mmap) -> None:
        address = ctypes.addressof(ctypes.c_char.from_buffer(mm))
        code = torch.cuda.cudart().cudaHostRegister(address, len(mm), 0)  # type: ignore[no-untyped-call]
        if int(code) != 0:  # not fatal: copies just stay synchronous
            LOGGER.warning("could not page-lock a shared-memory segment (cudaHostRegister error %s)", code)
            return
        self._registered[id(mm)] = address

    def on_unmap(self, mm: mmap.mmap) -> None:
        address = self._registered.pop(id(mm), None)
        if address is not None:
            torch.cuda.cudart().cudaHostUnregister(address)  # type: ignore[no-untyped-call]


class TorchInfer(PinningInfer):
    """Wraps an infer callable so that it gets torch tensors on ``device`` (see module docstring)."""

    def __init__(self, fn: Callable[..., Any], device: torch.device, *, model_name: str) -> None:
        self.__wrapped__ = fn  # lets bind() find decorators and inject the Triton context
        self._fn = fn
        self.device = device
        self._model_name = model_name
        self.stream: Any = torch.cuda.Stream(device=device) if device.type == "cuda" else None  # type: ignore[no-untyped-call]
        # PYTRITON_TORCH_PINNED=0 turns page-locking off (to measure what it brings).
        pin = device.type == "cuda" and os.environ.get("PYTRITON_TORCH_PINNED", "1") != "0"
        self.pinned = PinnedSegments() if pin else None

    def __call__(self, requests: list[Request]) -> Any:
        batch = len(requests)
        try:
            with self.on_stream():
                converted = [_with_data(r, {k: self.to_device(v) for k, v in r.items()}) for r in requests]
                result = self._fn(converted)
                if inspect.isgenerator(result):
                    return self._synced_iter(result, batch)
                if inspect.isasyncgen(result):
                    return self._synced_aiter(result, batch)
                if inspect.isawaitable(result):
                    return self._synced_await(result, batch)
                self.synchronize()
                return result
        except Exception as exc:
            raise self._translate(exc, batch) from exc

    def to_device(self, value: Any) -> Any:
        """A request array as a tensor on this instance's device (BYTES stay numpy object arrays)."""
        if not isinstance(value, np.ndarray) or value.dtype == np.object_:
            return value
        tensor = wire_to_torch(value)
        if self.device.type == "cpu":
            return tensor
        return tensor.to(self.device, non_blocking=True)

    def synchronize(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()

    def on_stream(self) -> contextlib.AbstractContextManager[Any]:
        """Make this instance's CUDA stream current (no-op on CPU)."""
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def _translate(self, exc: Exception, batch: int) -> Exception:
        return translate(exc, model_name=self._model_name, device=self.device, batch=batch)

    def _synced_iter(self, items: Iterator[Any], batch: int) -> Iterator[Any]:
        try:
            while True:
                with self.on_stream():
                    try:
                        item = next(items)
                    except StopIteration:
                        return
                    self.synchronize()
                yield item
        except Exception as exc:
            raise self._translate(exc, batch) from exc

    async def _synced_aiter(self, items: AsyncIterator[Any], batch: int) -> AsyncIterator[Any]:
        try:
            async for item in items:
                self.synchronize()
                yield item
        except Exception as exc:
            raise self._translate(exc, batch) from exc

    async def _synced_await(self, awaitable: Any, batch: int) -> Any:
        try:
            result = await awaitable
            self.synchronize()
            return result
        except Exception as exc:
            raise self._translate(exc, batch) from exc


def _with_data(request: Request, data: dict[str, Any]) -> Request:
    return request.with_data(data)
