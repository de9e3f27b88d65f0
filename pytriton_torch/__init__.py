"""pytriton_torch: serve PyTorch models and Python functions through NVIDIA Triton.

Example::

    import numpy as np
    from pytriton_torch import ModelConfig, Tensor, Triton, batch

    @batch
    def infer(x):
        return {"y": x * 2}

    with Triton() as triton:
        triton.bind("double", infer, inputs=[Tensor(name="x", dtype=np.float32, shape=(-1,))],
                    outputs=[Tensor(name="y", dtype=np.float32, shape=(-1,))], config=ModelConfig(max_batch_size=8))
        triton.serve()
"""

from ._repository import RepositoryReport
from ._types import Request
from .decorators import (
    ConstantPadder,
    batch,
    fill_optionals,
    first_value,
    group_by_keys,
    group_by_values,
    pad_batch,
    sample,
    triton_context,
)
from .model_config import DeviceKind, DynamicBatcher, ModelConfig, QueuePolicy, Tensor, TimeoutAction
from .triton import Triton, TritonConfig

__version__ = "0.1.0"

__all__ = [
    "ConstantPadder",
    "batch",
    "fill_optionals",
    "first_value",
    "group_by_keys",
    "group_by_values",
    "pad_batch",
    "sample",
    "triton_context",
    "DeviceKind",
    "DynamicBatcher",
    "ModelConfig",
    "QueuePolicy",
    "RepositoryReport",
    "Request",
    "Tensor",
    "TimeoutAction",
    "Triton",
    "TritonConfig",
    "__version__",
]
