"""Attributes of a PyTriton module, imported on first use (the client code is PyTriton's own)."""

from __future__ import annotations

import importlib
from types import ModuleType


def pytriton_module(name: str) -> ModuleType:
    """Import ``pytriton.<name>``; ImportError saying what to install when nvidia-pytriton is absent."""
    try:
        return importlib.import_module(f"pytriton.{name}")
    except ModuleNotFoundError as exc:
        if exc.name is None or not (exc.name == "pytriton" or exc.name.startswith("pytriton.")):
            raise
        raise ImportError(
            f"pytriton_torch.{name} re-exports PyTriton's clients, which come with the nvidia-pytriton "
            "package: pip install nvidia-pytriton"
        ) from exc


def lazy_attribute(module: str, names: frozenset[str], owner: str, name: str) -> object:
    """The ``__getattr__`` body of a re-exporting module ``owner``."""
    if name not in names:
        raise AttributeError(f"module {owner!r} has no attribute {name!r}")
    return getattr(pytriton_module(module), name)
