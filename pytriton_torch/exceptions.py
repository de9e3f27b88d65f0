"""Every error pytriton_torch raises, in one hierarchy.

::

    PyTritonTorchError
    ├── PyTritonTorchValidationError      bad argument, config or data (user-fixable)
    │   ├── PyTritonTorchBadParameterError  a decorator/helper got a wrong parameter
    │   └── PyTritonTorchInvalidOperationError  a call that is not allowed in this state
    ├── PyTritonTorchServerError          tritonserver failed to start, died or timed out
    │   └── PyTritonTorchPortInUseError     a configured port is already taken
    ├── PyTritonTorchModelError           a model failed to load or is unknown
    ├── PyTritonTorchInferenceError       an infer function failed; sent back to the client
    │   ├── PyTritonTorchUnrecoverableError the process must be restarted (e.g. CUDA context lost)
    │   └── PyTritonTorchTimeoutError       an infer function ran past its time limit
    └── PyTritonTorchChannelError         the proxy <-> user-process channel broke

Aliases with PyTriton's names (``PyTritonError``, ``PyTritonValidationError``, ...) exist so that
``except`` clauses written for PyTriton keep working.

Example::

    from pytriton_torch.exceptions import PyTritonTorchValidationError

    try:
        triton.bind("model", infer_fn, inputs=[], outputs=[])
    except PyTritonTorchValidationError as exc:
        print(f"fix the binding: {exc}")
"""

from __future__ import annotations


class PyTritonTorchError(Exception):
    """Base class of every error raised by pytriton_torch."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PyTritonTorchValidationError(PyTritonTorchError):
    """A value given by the user (argument, config, tensor) is not what was expected."""


class PyTritonTorchBadParameterError(PyTritonTorchValidationError):
    """A decorator or helper got a parameter it cannot use."""


class PyTritonTorchInvalidOperationError(PyTritonTorchValidationError):
    """The operation is not allowed in the current state (e.g. bind after stop)."""


class PyTritonTorchServerError(PyTritonTorchError):
    """tritonserver could not start, stopped unexpectedly or did not answer in time."""


class PyTritonTorchPortInUseError(PyTritonTorchServerError):
    """A port given in TritonConfig is already in use by another process."""


class PyTritonTorchModelError(PyTritonTorchError):
    """A model failed to load, or the named model does not exist."""


class PyTritonTorchInferenceError(PyTritonTorchError):
    """An infer function raised; the message is sent back to the client."""


class PyTritonTorchUnrecoverableError(PyTritonTorchInferenceError):
    """An error after which the serving process must be restarted (e.g. a poisoned CUDA context).

    Raise it from an infer function to fail the batch and stop the server.
    """


class PyTritonTorchTimeoutError(PyTritonTorchInferenceError):
    """An infer function ran past the model's configured time limit (``ModelConfig.timeout_s``).

    Raised on Triton's side of the channel; the client gets its message as the request's error.
    """


class PyTritonTorchChannelError(PyTritonTorchError):
    """The channel between Triton's proxy model and this process broke.

    The serving process exited, the connection was closed (server stopping, model unloading) or
    could not be made; a failed request gets its message.
    """


# PyTriton-compatible names.
PyTritonError = PyTritonTorchError
PyTritonValidationError = PyTritonTorchValidationError
PyTritonBadParameterError = PyTritonTorchBadParameterError
PyTritonInvalidOperationError = PyTritonTorchInvalidOperationError
PyTritonUnrecoverableError = PyTritonTorchUnrecoverableError
PyTritonModelConfigError = PyTritonTorchValidationError
# PyTriton raises this for misuse of decorators that matches no other class; ours raise subclasses
# of the base for those cases, so the base is what ``except PyTritonRuntimeError`` must catch.
PyTritonRuntimeError = PyTritonTorchError

__all__ = [
    "PyTritonTorchError",
    "PyTritonTorchValidationError",
    "PyTritonTorchBadParameterError",
    "PyTritonTorchInvalidOperationError",
    "PyTritonTorchServerError",
    "PyTritonTorchPortInUseError",
    "PyTritonTorchModelError",
    "PyTritonTorchInferenceError",
    "PyTritonTorchUnrecoverableError",
    "PyTritonTorchTimeoutError",
    "PyTritonTorchChannelError",
    "PyTritonError",
    "PyTritonValidationError",
    "PyTritonBadParameterError",
    "PyTritonInvalidOperationError",
    "PyTritonUnrecoverableError",
    "PyTritonModelConfigError",
    "PyTritonRuntimeError",
]
