"""The infer callable that runs a torch module on one device for one model instance."""

from __future__ import annotations

import bisect
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .._batching import gather, split
from .._dtypes import torch_to_wire
from .._types import Request
from ..exceptions import PyTritonTorchInferenceError, PyTritonTorchValidationError
from ._spec import flatten_outputs

LOGGER = logging.getLogger("pytriton_torch.torch")


class ModuleRunner:
    """Infer function for one instance: batch the requests, run ``method`` on ``device``, split back.

    It is bound with ``tensors="torch"``: requests arrive as tensors already on ``device`` (see
    :class:`~pytriton_torch._torch._adapter.TorchInfer`, which also owns the instance's CUDA
    stream). Instances on the same device share one module object (one copy of the weights).
    Outputs come back to the host once per batch and are split into per-request views.
    With CUDA graphs captured, a batch is padded up to the next captured size and replayed.
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
        channels_last: Sequence[int] = (),
    ) -> None:
        self._method = method
        self._what = f"model {model_name!r}"
        self._inputs = list(input_names)
        self._outputs = dict(output_names)  # module's name -> served name
        self.device = device
        self._batching = batching
        self._autocast = autocast
        self._inference_mode = inference_mode
        self.channels_last = set(channels_last)  # positions of inputs fed in NHWC layout
        self._graphs: dict[int, _Graph] = {}
        self._graph_sizes: list[int] = []

    @property
    def graph_sizes(self) -> list[int]:
        """Batch sizes with a captured CUDA graph (empty when graphs are off)."""
        return list(self._graph_sizes)

    def _context(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode(self._inference_mode))
        if self._autocast is not None:
            stack.enter_context(torch.autocast(device_type=self.device.type, dtype=self._autocast))
        return stack

    def run(self, tensors: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Call the module on tensors (moved to the device); returns its outputs by name, on device."""
        moved = [self._move(i, t) for i, t in enumerate(tensors)]
        rows = int(moved[0].shape[0]) if self._batching and moved and moved[0].dim() else 0
        index = bisect.bisect_left(self._graph_sizes, rows) if self._graphs else len(self._graph_sizes)
        if index < len(self._graph_sizes):
            return self._graphs[self._graph_sizes[index]].replay(moved, rows)
        with self._context():
            return flatten_outputs(self._method(*moved), self._what)

    def _move(self, position: int, tensor: torch.Tensor) -> torch.Tensor:
        if position in self.channels_last:
            return tensor.to(self.device, non_blocking=True, memory_format=torch.channels_last)
        return tensor.to(self.device, non_blocking=True)

    def capture_graphs(self, examples: Sequence[torch.Tensor], sizes: Sequence[int], stream: Any) -> None:
        """Capture one CUDA graph per batch size (inputs shaped like ``examples`` past the batch axis)."""
        if self.device.type != "cuda":
            raise PyTritonTorchValidationError(
                f"{self._what}: CUDA graphs need a CUDA device; this instance runs on {self.device}"
            )
        if not self._batching:
            raise PyTritonTorchValidationError(f"{self._what}: CUDA graphs need a batching model")
        for size in sorted(set(sizes)):
            static = [
                self._move(i, torch.zeros((size, *e.shape[1:]), dtype=e.dtype, device=self.device))
                for i, e in enumerate(examples)
            ]
            self._graphs[size] = _Graph.capture(self, static, stream)
            LOGGER.info("%s: captured a CUDA graph for batch size %d on %s", self._what, size, self.device)
        self._graph_sizes = sorted(self._graphs)

    def _eager(self, tensors: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        with self._context():
            return flatten_outputs(self._method(*tensors), self._what)

    def __call__(self, requests: list[Request]) -> list[dict[str, np.ndarray]]:
        # torch tensors (bound with tensors="torch")
        tensors: list[torch.Tensor] = [gather([r[name] for r in requests]) for name in self._inputs]
        outputs = self.run(tensors)
        host = self._to_host(outputs)
        if len(requests) == 1:
            return [host]
        sizes = [int(r[self._inputs[0]].shape[0]) for r in requests]
        return split(host, sizes, mismatch=self._mismatch)

    def _mismatch(self, name: str, value: Any, total: int) -> Exception:
        got = f"{value.shape[0]} rows" if value.ndim else "no batch axis"
        return PyTritonTorchInferenceError(
            f"{self._what}: output {name!r} has {got}; expected {total} (the batch Triton formed)"
        )

    def _to_host(self, outputs: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Served outputs as host arrays: queued device-to-host copies, then one synchronisation."""
        staged: dict[str, torch.Tensor] = {}
        for name, served in self._outputs.items():
            if name not in outputs:
                continue
            tensor = outputs[name].detach()
            if self._batching and tensor.dim() == 1:  # one value per sample: served with dims [1]
                tensor = tensor.unsqueeze(1)
            elif tensor.dim() == 0:
                tensor = tensor.reshape(1)
            if tensor.device.type == "cuda":
                pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
                tensor = pinned.copy_(tensor, non_blocking=True)
            staged[served] = tensor
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        return {name: torch_to_wire(tensor) for name, tensor in staged.items()}


class _Graph:
    """One captured CUDA graph: static input buffers, the replay, and static outputs."""

    def __init__(self, graph: Any, inputs: list[torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        self._graph = graph
        self._inputs = inputs
        self._outputs = outputs

    @classmethod
    def capture(cls, runner: ModuleRunner, static: list[torch.Tensor], stream: Any) -> _Graph:
        # Warm up on a side stream first (CUDA graphs must not capture lazy initialisation).
        side = stream or torch.cuda.Stream(device=runner.device)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(runner.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                runner._eager(static)
        torch.cuda.current_stream(runner.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()  # type: ignore[no-untyped-call]
        with torch.cuda.graph(graph, stream=side):
            outputs = runner._eager(static)
        return cls(graph, static, outputs)

    def replay(self, tensors: Sequence[torch.Tensor], rows: int) -> dict[str, torch.Tensor]:
        for static, tensor in zip(self._inputs, tensors, strict=True):
            static[:rows].copy_(tensor, non_blocking=True)
        self._graph.replay()
        # The static outputs are overwritten by the next replay; this instance copies them to the
        # host before it takes its next batch, so views are enough.
        return {name: value[:rows] for name, value in self._outputs.items()}
