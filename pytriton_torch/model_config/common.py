"""The names PyTriton documents under ``pytriton.model_config.common``, for scripts importing from there.

Example::

    from pytriton_torch.model_config.common import DynamicBatcher, ModelWarmup, WarmupInput
"""

from . import DeviceKind, DynamicBatcher, ModelWarmup, QueuePolicy, TimeoutAction, WarmupInput

__all__ = ["DeviceKind", "DynamicBatcher", "ModelWarmup", "QueuePolicy", "TimeoutAction", "WarmupInput"]
