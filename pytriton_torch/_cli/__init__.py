"""Implementation of the ``pytriton-torch`` command line; the entry point is :mod:`pytriton_torch.cli`."""
