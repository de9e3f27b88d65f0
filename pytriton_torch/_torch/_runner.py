"""The infer callable that runs a torch module on one device for one model instance."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .._types import Request
from ._spec import flatten_outputs


class ModuleRunner:
    """Infer function for one instance: batch the requests, run ``method`` on ``device``, split back.

    Instances on the same device share one module object (one copy of the weights); on CUDA each
    instance has its own stream.
    """

    def __init__(
        self,
        method: Callable[..., Any],
        *,
        model_name: str,
        input_names: Sequence[str],
        output_names: Mapping[str, str],
        device: torch.device,
        batching: bool,
        autocast: torch.dtype | None = None,
        inference_mode: bool = True,
    ) -> None:
        self._method = method
        self._what = f"model {model_name!r}"
        self._inputs = list(input_names)
        self._outputs = dict(output_names)  # module's name -> served name
        self.device = device
        self._batching = batching
        self._autocast = autocast
        self._inference_mode = inference_mode
        self.stream = torch.cuda.Stream(device=device) if device.type == "cuda" else None  # type: ignore[no-untyped-call]

    def _context(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode(self._inference_mode))
        if self._autocast is not None:
            stack.enter_context(torch.autocast(device_type=self.device.type, dtype=self._autocast))
        if self.stream is not None:
            stack.enter_context(torch.cuda.stream(self.stream))
        return stack

    def run(self, tensors: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Call the module on device tensors; returns its outputs by name (still on device)."""
        with self._context():
            moved = [t.to(self.device, non_blocking=True) for t in tensors]
            outputs = flatten_outputs(self._method(*moved), self._what)
        return outputs

    def __call__(self, requests: list[Request]) -> list[dict[str, np.ndarray]]:
        sizes = [_rows(r, self._inputs[0]) for r in requests] if self._batching else [1] * len(requests)
        tensors = []
        for name in self._inputs:
            arrays = [r[name] for r in requests]
            array = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
            tensors.append(torch.from_numpy(array))  # zero-copy view of the request buffer
        outputs = self.run(tensors)
        if self.stream is not None:
            self.stream.synchronize()  # CUDA errors surface here, on the batch that caused them
        host = {
            served: _to_numpy(outputs[name], self._batching)
            for name, served in self._outputs.items()
            if name in outputs
        }
        if len(requests) == 1:
            return [host]
        bounds = np.cumsum(sizes)[:-1]
        per_output = {name: np.split(value, bounds) for name, value in host.items()}
        return [{name: parts[i] for name, parts in per_output.items()} for i in range(len(requests))]


def _rows(request: Request, first_input: str) -> int:
    array = request[first_input]
    return int(array.shape[0]) if array.ndim else 1


def _to_numpy(tensor: torch.Tensor, batching: bool) -> np.ndarray:
    tensor = tensor.detach()
    if batching and tensor.dim() == 1:  # one value per sample: served with dims [1]
        tensor = tensor.unsqueeze(1)
    elif tensor.dim() == 0:
        tensor = tensor.reshape(1)
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16; served as FP32 until BF16 lands
        tensor = tensor.float()
    return tensor.cpu().numpy()
