"""pytriton_torch._torch._errors: which torch failures stop the server, which fail one batch."""

from __future__ import annotations

import pytest
import torch

from pytriton_torch._torch._errors import is_fatal_cuda_error, is_out_of_memory, translate
from pytriton_torch.exceptions import PyTritonTorchInferenceError, PyTritonTorchUnrecoverableError

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "message",
    [
        "CUDA error: device-side assert triggered",
        "CUDA error: an illegal memory access was encountered",
        "CUDA error: unspecified launch failure",
        "CUDA error: misaligned address",
    ],
)
def test_context_poisoning_cuda_errors_are_fatal(message: str) -> None:
    exc = RuntimeError(message)
    assert is_fatal_cuda_error(exc)
    error = translate(exc, model_name="m", device=torch.device("cuda:1"), batch=3)
    assert isinstance(error, PyTritonTorchUnrecoverableError)
    assert "model 'm': CUDA error on cuda:1" in str(error) and "restart the process" in str(error)


def test_accelerator_error_subclass_is_recognised() -> None:
    assert is_fatal_cuda_error(torch.AcceleratorError("CUDA error: an illegal memory access was encountered"))


@pytest.mark.parametrize(
    "exc",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried"
        ),
    ],
)
def test_out_of_memory_fails_only_the_batch(exc: Exception) -> None:
    assert is_out_of_memory(exc) and not is_fatal_cuda_error(exc)
    error = translate(exc, model_name="m", device=CPU, batch=7)
    assert type(error) is PyTritonTorchInferenceError
    assert "model 'm': out of memory on cpu for a batch of 7 request(s)" in str(error)
    assert "keeps serving" in str(error)


@pytest.mark.parametrize("exc", [ValueError("bad value"), RuntimeError("shape mismatch"), KeyError("x")])
def test_other_errors_pass_through_unchanged(exc: Exception) -> None:
    assert translate(exc, model_name="m", device=CPU, batch=1) is exc
