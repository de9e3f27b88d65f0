"""Turn torch failures into errors that say what happened and whether the process can go on."""

from __future__ import annotations

import torch

from ..exceptions import PyTritonTorchInferenceError, PyTritonTorchUnrecoverableError

# Messages of errors that leave the CUDA context unusable: every later CUDA call fails too.
_FATAL_CUDA = (
    "device-side assert",
    "illegal memory access",
    "illegal address",
    "misaligned address",
    "unspecified launch failure",
    "an illegal instruction",
    "CUDA error: uncorrectable ECC",
    "CUBLAS_STATUS_EXECUTION_FAILED",
    "cudaErrorLaunchFailure",
)
_OOM = ("CUDA out of memory", "DefaultCPUAllocator: can't allocate memory", "out of memory")


def is_fatal_cuda_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a CUDA error that poisons the context (no recovery in-process)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return False
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(marker in text for marker in _FATAL_CUDA)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (CUDA or CPU)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in _OOM)
    )


def translate(exc: Exception, *, model_name: str, device: torch.device, batch: int) -> Exception:
    """The error to report for ``exc`` raised while running a batch of ``batch`` requests."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if is_fatal_cuda_error(exc):
        return PyTritonTorchUnrecoverableError(
            f"model {model_name!r}: CUDA error on {device} ({first_line}); the CUDA context is no longer "
            f"usable, so the server stops: restart the process"
        )
    if is_out_of_memory(exc):
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return PyTritonTorchInferenceError(
            f"model {model_name!r}: out of memory on {device} for a batch of {batch} request(s) "
            f"({first_line}); send smaller requests or lower max_batch_size. The model keeps serving"
        )
    return exc
