"""Gather requests into one batch along dim 0, and split a batch's outputs back per request.

Used by ``@batch`` (decorators), the torch module runner and the repository runner. Works on numpy
arrays and torch tensors alike; torch is imported only when torch tensors are given, so importing
this module (and ``pytriton_torch``) never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from .exceptions import PyTritonTorchValidationError

T = TypeVar("T")

MismatchError = Callable[[str, Any, int], Exception | None]
"""``(output name, value, expected rows) -> error to raise``, or None to accept the value as it is."""


def is_torch(value: Any) -> bool:
    """Whether ``value`` is a torch tensor, without importing torch."""
    return hasattr(value, "__dlpack__") and hasattr(value, "detach")


def rows(value: Any) -> int:
    """Batch size of one value: its first dimension, 1 for a scalar or a value without a shape."""
    shape: Any = getattr(value, "shape", ())
    return int(shape[0]) if len(shape) else 1


def gather(parts: Sequence[Any]) -> Any:
    """One batch from the requests' parts of one input, joined along dim 0.

    A single part is returned as it is (no copy). All-numpy parts give a numpy array, all-torch
    parts a torch tensor (``torch.cat``), anything else is converted with ``np.asarray``. Raises
    ``ValueError``/``RuntimeError`` (from numpy/torch) when shapes past dim 0 differ, and
    :class:`PyTritonTorchValidationError` when there are no parts.
    """
    if not parts:
        raise PyTritonTorchValidationError("cannot form a batch from no requests")
    if len(parts) == 1:
        return parts[0]
    if all(isinstance(part, np.ndarray) for part in parts):
        return np.concatenate(parts, axis=0)
    if all(is_torch(part) for part in parts):
        import torch

        return torch.cat(list(parts), dim=0)
    return np.concatenate([np.asarray(part) for part in parts], axis=0)


def _default_mismatch(name: str, value: Any, total: int) -> Exception:
    shape = getattr(value, "shape", None)
    got = f"batch size {int(shape[0])}" if shape is not None and len(shape) else "no batch axis"
    return PyTritonTorchValidationError(f"output {name!r} has {got}; expected batch size {total}")


def split(
    outputs: Mapping[str, T], sizes: Sequence[int], *, mismatch: MismatchError = _default_mismatch
) -> list[dict[str, T]]:
    """Cut batch outputs back into one dict per request, by the requests' batch sizes.

    Every output must have a first dimension equal to ``sum(sizes)``; for one that has not (or has
    no batch axis at all), ``mismatch(name, value, total)`` gives the error to raise, or None to let
    it pass (only sensible for a single request, whose outputs are then returned as they are).
    Parts are views (slices) of the batch outputs. No requests give an empty list.
    """
    if not sizes:
        return []
    total = sum(sizes)
    for name, value in outputs.items():
        shape: Any = getattr(value, "shape", None)
        if shape is None or len(shape) == 0 or int(shape[0]) != total:
            error = mismatch(name, value, total)
            if error is not None:
                raise error
    if len(sizes) == 1:
        return [outputs if isinstance(outputs, dict) else dict(outputs)]
    responses: list[dict[str, T]] = []
    start = 0
    for size in sizes:
        responses.append({name: value[start : start + size] for name, value in outputs.items()})  # type: ignore[index]
        start += size
    return responses
