"""The infer callable of one repository model instance: gather a batch, run the module, scatter."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .._batching import gather, split
from .._dtypes import torch_to_wire, wire_to_torch
from .._types import Request
from ..exceptions import PyTritonTorchInferenceError
from ._conventions import InputPlan, TensorSpec, map_outputs
from ._params import TorchSettings

LOGGER = logging.getLogger("pytriton_torch.repository")


class RepositoryRunner:
    """Infer function of one instance: gather the batch, run the module once, split it back.

    Requests are concatenated on dim 0 (batching), the module runs under the model's settings,
    and its outputs are split back per request.

    Instances on one device share the module object (one copy of the weights) unless the model
    sets ``ENABLE_WEIGHT_SHARING: false``.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        model: str,
        version: int,
        instance: int,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        plan: InputPlan,
        device: torch.device,
        batching: bool,
        settings: TorchSettings,
        module: Any = None,
    ) -> None:
        self.fn = fn
        self.module = module if module is not None else fn
        self.model = model
        self.version = version
        self.instance = instance
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.plan = plan
        self.device = device
        self.batching = batching
        self.settings = settings
        self.stream = torch.cuda.Stream(device=device) if device.type == "cuda" else None  # type: ignore[no-untyped-call]
        self.last_snapshot: dict[str, Any] | None = None
        self.record_settings = False
        LOGGER.info(
            "model %r version %d instance %d on %s (%s inputs): %s",
            model,
            version,
            instance,
            device,
            plan.convention,
            settings.describe(),
        )

    def __call__(self, requests: list[Request]) -> list[dict[str, np.ndarray]]:
        present = [frozenset(name for name in r if r[name] is not None) for r in requests]
        if len(requests) > 1 and (not self.batching or len(set(present)) > 1):
            # without a batch axis, or when optional inputs come in some requests only: run them apart
            return [self._run_batch([request])[0] for request in requests]
        return self._run_batch(requests)

    def _run_batch(self, requests: list[Request]) -> list[dict[str, np.ndarray]]:
        values: dict[str, Any] = {}
        sizes: list[int] | None = None
        for spec in self.inputs:
            if requests[0].get(spec.name) is None:
                if not spec.optional:
                    raise PyTritonTorchInferenceError(f"model {self.model!r}: input {spec.name!r} is missing")
                values[spec.name] = None
                continue
            arrays = [r[spec.name] for r in requests]
            if sizes is None:
                sizes = [int(a.shape[0]) if a.ndim else 1 for a in arrays]
            values[spec.name] = self._to_torch(spec, arrays)
        with self._context():
            if self.record_settings:
                self.last_snapshot = self.settings.snapshot()
            result = self.plan.call(self.fn, values)
            named = map_outputs(self.model, result, self.outputs)
            total = sum(sizes or [1])
            host = {name: self._to_numpy(value, total) for name, value in named.items()}
        if self.settings.cache_cleaning and self.device.type == "cuda":
            torch.cuda.empty_cache()
        if len(requests) == 1:
            return [host]
        return split(host, sizes or [1] * len(requests), mismatch=self._mismatch)

    def _mismatch(self, name: str, array: Any, total: int) -> Exception:
        got = "no batch axis" if array.ndim == 0 else f"{array.shape[0]} rows"
        return PyTritonTorchInferenceError(
            f"model {self.model!r}: output {name!r} has {got}; expected {total} (the batch Triton formed)"
        )

    @contextlib.contextmanager
    def _context(self) -> Any:
        with self.settings.applied():
            if self.stream is not None:
                with torch.cuda.stream(self.stream):
                    yield
                self.stream.synchronize()  # CUDA errors surface on the batch that caused them
            else:
                yield

    def _to_torch(self, spec: TensorSpec, arrays: list[np.ndarray]) -> Any:
        if spec.is_string:
            flat = [item for array in arrays for item in np.asarray(array, dtype=object).reshape(-1)]
            try:
                return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in flat]
            except UnicodeDecodeError:
                raise PyTritonTorchInferenceError(
                    f"model {self.model!r}: input {spec.name!r} (TYPE_STRING) is not valid UTF-8"
                ) from None
        array = gather(arrays)
        tensor = wire_to_torch(array)
        return tensor.to(self.device, non_blocking=True) if self.device.type != "cpu" else tensor

    def _to_numpy(self, value: Any, rows: int) -> np.ndarray:
        if isinstance(value, torch.Tensor):
            return torch_to_wire(value)
        array = np.array([s.encode("utf-8") for s in value], dtype=object)
        if self.batching and array.size % max(rows, 1) == 0:  # List[str]: flat, rows first
            return array.reshape(rows, -1)
        return array
