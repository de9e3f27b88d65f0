"""PyTriton's clients under our name: ``from pytriton_torch.client import ModelClient``.

These are PyTriton's own classes (from the installed ``nvidia-pytriton`` package, imported on
first use), so a client script written for PyTriton works after renaming the import. They talk
to any Triton server, ours included.

Example::

    from pytriton_torch.client import ModelClient

    with ModelClient("localhost:8000", "double") as client:
        result = client.infer_batch(x=np.ones((1, 4), dtype=np.float32))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_attribute

if TYPE_CHECKING:
    from pytriton.client import (
        AsyncioDecoupledModelClient,
        AsyncioModelClient,
        DecoupledModelClient,
        FuturesModelClient,
        ModelClient,
    )

__all__ = [
    "AsyncioDecoupledModelClient",
    "AsyncioModelClient",
    "DecoupledModelClient",
    "FuturesModelClient",
    "ModelClient",
]


def __getattr__(name: str) -> object:
    return lazy_attribute("client", frozenset(__all__), __name__, name)
