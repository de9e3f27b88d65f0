"""The request/response objects an infer function sees.

An undecorated infer function receives a ``list[Request]`` (one per client request in the batch
Triton formed) and returns a ``list`` of mappings ``output name -> np.ndarray``, one per request.
"""

from __future__ import annotations

import threading
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

    In a streaming (decoupled) model, :meth:`is_cancelled` tells whether the stream was cancelled
    (the client cancelled or went away, the stream timed out, or the server is stopping).
    """

    __slots__ = ("_cancelled", "data", "parameters", "request_id", "requested_output_names")

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
        self._cancelled: threading.Event | None = None  # set by the channel for streaming models

    def is_cancelled(self) -> bool:
        """Whether this request's stream was cancelled; nobody reads what is produced after that.

        A generator is closed at its next ``yield`` anyway (``GeneratorExit`` there); a function
        that works long between chunks, or a plain function bound to a decoupled model, can
        check this to stop early. Always False for non-streaming models.

        Example::

            def infer(requests):
                for step in range(100):
                    if requests[0].is_cancelled():
                        return
                    yield [{"token": next_token(r)} for r in requests]
        """
        return self._cancelled is not None and self._cancelled.is_set()

    def with_data(self, data: dict[str, Any]) -> Request:
        """A copy with other inputs; parameters, id, requested outputs and cancellation are shared."""
        copy = Request(data, self.parameters, self.requested_output_names, self.request_id)
        copy._cancelled = self._cancelled
        return copy

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
