"""PyTriton's client errors under our name (``pytriton.client.exceptions``), imported on first use.

Example::

    from pytriton_torch.client.exceptions import PyTritonClientTimeoutError
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_attribute

if TYPE_CHECKING:
    from pytriton.client.exceptions import (
        PyTritonClientClosedError,
        PyTritonClientError,
        PyTritonClientInferenceServerError,
        PyTritonClientInvalidUrlError,
        PyTritonClientModelDoesntSupportBatchingError,
        PyTritonClientModelUnavailableError,
        PyTritonClientQueueFullError,
        PyTritonClientTimeoutError,
        PyTritonClientValueError,
    )

__all__ = [
    "PyTritonClientClosedError",
    "PyTritonClientError",
    "PyTritonClientInferenceServerError",
    "PyTritonClientInvalidUrlError",
    "PyTritonClientModelDoesntSupportBatchingError",
    "PyTritonClientModelUnavailableError",
    "PyTritonClientQueueFullError",
    "PyTritonClientTimeoutError",
    "PyTritonClientValueError",
]


def __getattr__(name: str) -> object:
    return lazy_attribute("client.exceptions", frozenset(__all__), __name__, name)
