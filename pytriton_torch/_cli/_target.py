"""Resolve what ``pytriton-torch serve`` was asked to serve.

``TARGET`` is one of:

- a model repository folder (served through ``Triton.load_repository``);
- ``path/to/file.py:NAME`` or ``package.module:NAME``: ``NAME`` is a callable taking the started
  :class:`~pytriton_torch.triton.Triton` and binding models on it;
- ``path/to/file.py`` or ``package.module`` alone: the callable ``bind_models`` in it.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import pathlib
import sys
from collections.abc import Callable
from typing import Any

from ._exit import CliError, ExitCode

DEFAULT_OBJECT = "bind_models"


@dataclasses.dataclass(frozen=True)
class RepositoryTarget:
    """A model repository folder."""

    path: pathlib.Path


@dataclasses.dataclass(frozen=True)
class BinderTarget:
    """A callable that binds models on a ``Triton``."""

    source: str
    object_name: str
    binder: Callable[[Any], Any]


def resolve(target: str) -> RepositoryTarget | BinderTarget:
    """Turn the ``serve`` argument into a repository or a binder; raise CliError(USAGE) when impossible."""
    path = pathlib.Path(target)
    if path.is_dir():
        return RepositoryTarget(path.resolve())
    source, _, name = target.rpartition(":") if _has_object(target) else (target, "", "")
    name = name or DEFAULT_OBJECT
    if not name.isidentifier():
        raise CliError(
            f"{target!r}: {name!r} is not a Python name; use FILE.py:NAME or module:NAME", ExitCode.USAGE
        )
    module = _load_module(source)
    try:
        binder = getattr(module, name)
    except AttributeError:
        raise CliError(
            f"{source} has no attribute {name!r}; define `def {name}(triton): triton.bind(...)` there "
            f"or name the callable as {source}:NAME",
            ExitCode.USAGE,
        ) from None
    if not callable(binder):
        raise CliError(
            f"{source}:{name} is a {type(binder).__name__}, not a callable taking a Triton", ExitCode.USAGE
        )
    return BinderTarget(source, name, binder)


def _has_object(target: str) -> bool:
    """``a/b.py:obj`` or ``pkg.mod:obj`` (a Windows-style drive letter is not a concern on Linux)."""
    return ":" in target


def _load_module(source: str) -> Any:
    if source.endswith(".py") or "/" in source:
        file = pathlib.Path(source)
        if not file.is_file():
            raise CliError(f"{source}: no such file (and not a model repository folder)", ExitCode.USAGE)
        return _load_file(file.resolve())
    # As with `python -m`, modules of the current folder are importable (a console script lacks that).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(source)
    except ModuleNotFoundError as exc:
        if exc.name is not None and source.startswith(exc.name):
            raise CliError(
                f"{source!r} is neither a folder, a .py file nor an importable module ({exc})", ExitCode.USAGE
            ) from None
        raise


def _load_file(file: pathlib.Path) -> Any:
    # The file's folder goes first on sys.path so that it can import its neighbours, as `python file.py` would.
    folder = str(file.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module_name = f"_pytriton_torch_serve_{file.stem}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise CliError(f"{file}: cannot be imported as Python", ExitCode.USAGE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
