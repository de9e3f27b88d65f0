"""How a bound model is configured: its tensors, batching and Triton scheduling options.

The names and defaults follow PyTriton's ``pytriton.model_config`` so that existing server
scripts keep working.

Example::

    import numpy as np
    from pytriton_torch.model_config import DynamicBatcher, ModelConfig, Tensor

    inputs = [Tensor(name="x", dtype=np.float32, shape=(16,))]
    outputs = [Tensor(name="y", dtype=np.float32, shape=(8,))]
    config = ModelConfig(max_batch_size=64, batcher=DynamicBatcher(max_queue_delay_microseconds=100))
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Any

from ..exceptions import PyTritonTorchValidationError


class DeviceKind(enum.Enum):
    """Where a model's instances run: a ``device`` of ``bind(tensors="torch")`` and ``bind_module``.

    ``KIND_GPU`` is ``"cuda"`` (the current CUDA device), ``KIND_CPU`` is ``"cpu"`` and
    ``KIND_AUTO`` is ``"auto"`` (CUDA when available). In PyTriton it is the kind of the generated
    config's instance group, which is always ``KIND_CPU`` there as here: Triton's instances only
    forward requests to this process, where the infer callables run on their own device.

    Example::

        triton.bind("net", infer, inputs=[...], outputs=[...], tensors="torch", device=DeviceKind.KIND_GPU)
    """

    KIND_AUTO = "KIND_AUTO"
    KIND_CPU = "KIND_CPU"
    KIND_GPU = "KIND_GPU"


class TimeoutAction(enum.Enum):
    """What the dynamic batcher does with a request whose queue timeout expired."""

    REJECT = "REJECT"
    DELAY = "DELAY"


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One model input or output.

    Args:
        shape: Per-sample shape (without the batch axis when batching is on); ``-1`` marks a
            variable dimension.
        dtype: numpy dtype or type (``np.float32``, ``np.int64``, ``bytes``/``np.bytes_``/``object``
            for BYTES tensors, ``np.bool_``), a torch dtype, or ``"BF16"`` (also
            ``torch.bfloat16``) for bfloat16 tensors.
        name: Input/output name; required by ``bind``.
        optional: Inputs only: clients may leave it out.

    Example::

        Tensor(name="image", dtype=np.uint8, shape=(-1, -1, 3))
    """

    shape: tuple[int, ...]
    dtype: Any
    name: str | None = None
    optional: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.shape, Sequence) or isinstance(self.shape, str):
            raise PyTritonTorchValidationError(
                f"Tensor {self.name!r}: shape must be a tuple of ints, got {self.shape!r}"
            )
        try:
            shape = tuple(int(d) for d in self.shape)
        except (TypeError, ValueError):
            raise PyTritonTorchValidationError(
                f"Tensor {self.name!r}: shape must be a tuple of ints, got {self.shape!r}"
            ) from None
        if any(d < -1 or d == 0 for d in shape):
            raise PyTritonTorchValidationError(
                f"Tensor {self.name!r}: shape dimensions must be positive or -1, got {shape}"
            )
        object.__setattr__(self, "shape", shape)
        from .._dtypes import normalize_spec_dtype

        object.__setattr__(self, "dtype", normalize_spec_dtype(self.dtype, what=f"tensor {self.name!r}"))


@dataclasses.dataclass
class QueuePolicy:
    """A dynamic-batcher queue policy (``ModelQueuePolicy`` in Triton's model config).

    Args:
        timeout_action: What happens to a request that timed out in the queue.
        default_timeout_microseconds: Queue timeout for every request; 0 = none.
        allow_timeout_override: Whether a request may set its own timeout.
        max_queue_size: Requests above this queue length are rejected; 0 = unbounded.
    """

    timeout_action: TimeoutAction = TimeoutAction.REJECT
    default_timeout_microseconds: int = 0
    allow_timeout_override: bool = False
    max_queue_size: int = 0


@dataclasses.dataclass
class DynamicBatcher:
    """Triton's dynamic batcher settings.

    Args:
        max_queue_delay_microseconds: How long a request may wait for others to form a batch.
        preferred_batch_size: Batch sizes the batcher tries to form.
        preserve_ordering: Return responses in the order requests arrived.
        priority_levels: Number of priority levels; 0 disables priorities.
        default_priority_level: Priority of requests that do not set one.
        default_queue_policy: Queue policy for all priority levels.
        priority_queue_policy: Queue policy per priority level.
    """

    max_queue_delay_microseconds: int = 0
    preferred_batch_size: list[int] | None = None
    preserve_ordering: bool = False
    priority_levels: int = 0
    default_priority_level: int = 0
    default_queue_policy: QueuePolicy | None = None
    priority_queue_policy: dict[int, QueuePolicy] | None = None


@dataclasses.dataclass
class WarmupInput:
    """One input of a warm-up request (Triton's ``ModelWarmup.Input``)."""

    dtype: Any
    shape: Sequence[int]
    zero_data: bool = False
    random_data: bool = False
    input_data_file: str | None = None


@dataclasses.dataclass
class ModelWarmup:
    """A warm-up request Triton sends before the model is reported ready."""

    name: str
    batch_size: int
    inputs: dict[str, WarmupInput]
    count: int = 1


@dataclasses.dataclass
class ModelConfig:
    """Model-level options given to ``Triton.bind``.

    Args:
        batching: Whether the model takes a batch axis (dim 0) on every tensor.
        max_batch_size: Largest batch Triton sends (and accepts from one client request).
        batcher: Dynamic batcher settings; used when ``batching`` is on.
        response_cache: Cache responses (needs ``TritonConfig(cache_config=...)``).
        decoupled: Streaming model: the infer function is a generator and may answer any number
            of times per request (served over gRPC streaming).
        model_warmup: Warm-up requests run before the model is ready.
        parameters: Extra ``parameters`` entries for the generated config (string values).
        timeout_s: Per-model limit for one infer call in seconds; ``None`` = no limit. A batch
            that runs longer fails with a timeout error; its late answer is dropped.
        max_input_bytes: Largest input tensor (bytes, per request; BYTES tensors count their
            serialized size) the model accepts. A larger one fails that request before anything
            is forwarded to this process; ``None`` = no limit.
        max_concurrent_streams: Streaming (decoupled) models: how many streams one model instance
            serves at once (each runs in its own thread). A stream beyond it waits, in Triton's
            queue, until an open stream of that instance ends; the dynamic batcher keeps
            grouping the waiting requests. Ignored for other models.

    Example::

        ModelConfig(max_batch_size=32, batcher=DynamicBatcher(preferred_batch_size=[16, 32]))
    """

    batching: bool = True
    max_batch_size: int = 4
    batcher: DynamicBatcher = dataclasses.field(default_factory=DynamicBatcher)
    response_cache: bool = False
    decoupled: bool = False
    model_warmup: list[ModelWarmup] | None = None
    parameters: dict[str, str] = dataclasses.field(default_factory=dict)
    timeout_s: float | None = None
    max_input_bytes: int | None = None
    max_concurrent_streams: int = 64

    def __post_init__(self) -> None:
        if self.batching and self.max_batch_size < 1:
            raise PyTritonTorchValidationError(
                f"ModelConfig: max_batch_size must be >= 1 when batching is on, got {self.max_batch_size}"
            )
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise PyTritonTorchValidationError(
                f"ModelConfig: timeout_s must be > 0 or None, got {self.timeout_s}"
            )
        if self.max_input_bytes is not None and self.max_input_bytes < 1:
            raise PyTritonTorchValidationError(
                f"ModelConfig: max_input_bytes must be >= 1 or None, got {self.max_input_bytes}"
            )
        if self.max_concurrent_streams < 1:
            raise PyTritonTorchValidationError(
                f"ModelConfig: max_concurrent_streams must be >= 1, got {self.max_concurrent_streams}"
            )


__all__ = [
    "DeviceKind",
    "DynamicBatcher",
    "ModelConfig",
    "ModelWarmup",
    "QueuePolicy",
    "Tensor",
    "TimeoutAction",
    "WarmupInput",
]
