"""Checks on what an infer function returned, with errors that name the output."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._context import ModelInfo
from .._dtypes import numpy_to_triton
from .._types import Request
from ..exceptions import PyTritonTorchValidationError
from ._codec import as_wire_array


def request_batch_size(request: Request) -> int:
    for array in request.values():
        return int(array.shape[0]) if array.ndim else 1
    return 1


def check_responses(
    info: ModelInfo, requests: Sequence[Request], responses: Any, *, strict: bool
) -> list[dict[str, np.ndarray]]:
    """Validated (and, when not strict, dtype-converted) outputs per request."""
    model = info.model_name
    if isinstance(responses, dict):
        raise PyTritonTorchValidationError(
            f"model {model!r}: the infer function returned a dict; without @batch it must return a list "
            f"with one dict per request ({len(requests)} requests)"
        )
    if not isinstance(responses, list | tuple):
        raise PyTritonTorchValidationError(
            f"model {model!r}: the infer function returned {type(responses).__name__}; "
            f"expected a list of {len(requests)} dicts (one per request)"
        )
    if len(responses) != len(requests):
        raise PyTritonTorchValidationError(
            f"model {model!r}: the infer function returned {len(responses)} responses for {len(requests)} requests"
        )
    specs = {str(t.name): t for t in info.outputs}
    checked = []
    for request, response in zip(requests, responses, strict=True):
        if not hasattr(response, "items"):
            raise PyTritonTorchValidationError(
                f"model {model!r}: a response is {type(response).__name__}; expected a dict of output name -> array"
            )
        unknown = [] if response.keys() <= specs.keys() else sorted(set(response) - set(specs))
        if unknown:
            raise PyTritonTorchValidationError(
                f"model {model!r}: the infer function returned unknown output(s) {', '.join(unknown)}; "
                f"declared outputs are {', '.join(specs)}"
            )
        wanted = request.requested_output_names or list(specs)
        missing = [name for name in wanted if name not in response]
        if missing:
            raise PyTritonTorchValidationError(
                f"model {model!r}: the infer function did not return output(s) {', '.join(missing)}"
            )
        batch_size = request_batch_size(request) if info.batching else None
        out = {}
        for name in wanted:
            out[name] = _check_output(model, specs[name], as_wire_array(response[name]), batch_size, strict)
        checked.append(out)
    return checked


def _check_output(
    model: str, spec: Any, array: np.ndarray, batch_size: int | None, strict: bool
) -> np.ndarray:
    name = spec.name
    array = _check_dtype(model, name, spec.dtype, array, strict)
    per_sample = tuple(spec.shape)
    if batch_size is not None:
        if array.ndim == 0 or array.shape[0] != batch_size:
            got_size = "a scalar" if array.ndim == 0 else f"batch size {array.shape[0]}"
            raise PyTritonTorchValidationError(
                f"model {model!r}: output {name!r} has {got_size}; expected batch size {batch_size} "
                f"(the request's batch size)"
            )
        sample_shape = array.shape[1:]
    else:
        sample_shape = array.shape
    if strict and (
        len(sample_shape) != len(per_sample)
        or any(e != -1 and g != e for g, e in zip(sample_shape, per_sample, strict=True))
    ):
        raise PyTritonTorchValidationError(
            f"model {model!r}: output {name!r} has shape {list(array.shape)}; expected per-sample shape "
            f"{list(per_sample)}{' after the batch axis' if batch_size is not None else ''}"
        )
    return array


def _check_dtype(model: str, name: str, spec_dtype: Any, array: np.ndarray, strict: bool) -> np.ndarray:
    """The array in the output's dtype; lenient mode converts within a kind (e.g. float64 -> float32)."""
    want_dtype = np.dtype(spec_dtype)
    if array.dtype == want_dtype:
        return array
    got = numpy_to_triton(array.dtype, what=f"model {model!r}: output {name!r}")
    want = numpy_to_triton(want_dtype)
    if got == want:  # same Triton type (e.g. str and bytes arrays for BYTES) passes as is
        return array
    floats = {array.dtype.kind, want_dtype.kind} <= {"f"} or (
        "BF16" in (got, want) and array.dtype.kind in "fV"
    )
    if strict or "BYTES" in (got, want) or not (floats or np.can_cast(array.dtype, want_dtype, "same_kind")):
        raise PyTritonTorchValidationError(
            f"model {model!r}: output {name!r} has dtype {array.dtype} ({got}); expected {want_dtype} ({want})"
        )
    return array.astype(want_dtype)
