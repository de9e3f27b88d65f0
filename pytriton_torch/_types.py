"""The request/response objects an infer function sees.

An undecorated infer function receives a ``list[Request]`` (one per client request in the batch
Triton formed) and returns a ``list`` of mappings ``output name -> np.ndarray``, one per request.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, MutableMapping, ValuesView
from typing import Any

import numpy as np


class Request(MutableMapping[str, np.ndarray]):
    """One client request: a mapping of input name to array, plus its parameters.

    Example::

        def infer(requests):
            return [{"y": r["x"] * 2} for r in requests]

    ``parameters`` holds the request's parameters (and the HTTP/gRPC headers that Triton was
    told to forward). Arrays backed by shared memory are only valid during the call: copy an
    input if you keep it after returning.
    """

    __slots__ = ("data", "parameters", "request_id", "requested_output_names")

    def __init__(
        self,
        data: dict[str, np.ndarray] | None = None,
        parameters: dict[str, Any] | None = None,
        requested_output_names: list[str] | None = None,
        request_id: str = "",
    ) -> None:
        self.data: dict[str, np.ndarray] = {} if data is None else data
        self.parameters: dict[str, Any] = {} if parameters is None else parameters
        self.requested_output_names = requested_output_names
        self.request_id = request_id

    def __getitem__(self, name: str) -> np.ndarray:
        return self.data[name]

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        self.data[name] = value

    def __delitem__(self, name: str) -> None:
        del self.data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    # The dict's own views: MutableMapping's generic ones look every value up again (hot path).
    def keys(self) -> KeysView[str]:
        return self.data.keys()

    def values(self) -> ValuesView[np.ndarray]:
        return self.data.values()

    def items(self) -> ItemsView[str, np.ndarray]:
        return self.data.items()

    def __repr__(self) -> str:
        inputs = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self.data.items())
        return f"Request({{{inputs}}}, parameters={self.parameters!r})"


Response = dict[str, Any]
"""One request's outputs: output name -> ``np.ndarray`` (or torch tensor with the torch opt-in)."""

Requests = list[Request]
Responses = list[Response]

__all__ = ["Request", "Requests", "Response", "Responses"]
