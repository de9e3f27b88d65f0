"""``Tensor`` under PyTriton's module path ``pytriton.model_config.tensor``.

Example::

    from pytriton_torch.model_config.tensor import Tensor
"""

from . import Tensor

__all__ = ["Tensor"]
