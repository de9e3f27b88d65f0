"""PyTriton's ``pytriton.proxy`` package path; only :mod:`pytriton_torch.proxy.types` is provided."""
