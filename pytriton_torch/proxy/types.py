"""``Request`` under PyTriton's module path ``pytriton.proxy.types``.

Example::

    from pytriton_torch.proxy.types import Request
"""

from .._types import Request

__all__ = ["Request"]
