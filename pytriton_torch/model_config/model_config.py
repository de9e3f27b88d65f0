"""``ModelConfig`` under PyTriton's module path ``pytriton.model_config.model_config``.

Example::

    from pytriton_torch.model_config.model_config import ModelConfig
"""

from . import ModelConfig

__all__ = ["ModelConfig"]
