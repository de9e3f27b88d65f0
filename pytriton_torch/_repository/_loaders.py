"""Load a repository model's file onto a device: TorchScript, model.py + weights, ``.pt2``.

Weights are read with ``torch.load(weights_only=True)``; full unpickling (which can run any code
stored in the file) happens only with ``allow_pickle=True`` and logs a warning.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import logging
import pathlib
import pickle
import re
import sys
import zipfile
from collections.abc import Mapping
from typing import Any

import torch

from ..exceptions import PyTritonTorchModelError
from ._conventions import Signature, python_signature, torchscript_signature
from ._params import TorchSettings

LOGGER = logging.getLogger("pytriton_torch.repository")


@dataclasses.dataclass
class Loaded:
    """A module placed on a device, the callable to serve, and what its signature tells."""

    module: Any
    method: Any
    signature: Signature


def archive_names(path: pathlib.Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def is_torchscript(path: pathlib.Path) -> bool:
    return any(name.endswith("/constants.pkl") for name in archive_names(path))


def _served(model: str, module: Any, settings: TorchSettings) -> Any:
    method = getattr(module, settings.method, None)
    if method is None or not callable(method):
        raise PyTritonTorchModelError(
            f"model {model!r}: {type(module).__name__} has no method {settings.method!r} to serve "
            "(parameter METHOD)"
        )
    return method


def load_torchscript(model: str, path: pathlib.Path, device: torch.device, settings: TorchSettings) -> Loaded:
    """``torch.jit.load`` onto ``device`` (inside inference mode, as upstream)."""
    try:
        with torch.inference_mode(settings.inference_mode):
            module = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PyTritonTorchModelError(
            f"model {model!r}: failed to load TorchScript model {path.name}: {first}"
        ) from None
    module.eval()
    method = _served(model, module, settings)
    return Loaded(module, method, torchscript_signature(method))


def load_pt2(model: str, path: pathlib.Path, device: torch.device, settings: TorchSettings) -> Loaded:
    """A ``.pt2`` file: an AOTInductor package, or a program saved with ``torch.export.save``."""
    names = archive_names(path)
    if not names:
        raise PyTritonTorchModelError(f"model {model!r}: {path.name} is not a .pt2 archive")
    if any("aotinductor" in name for name in names):
        try:
            from torch._inductor import aoti_load_package
        except ImportError:
            raise PyTritonTorchModelError(
                f"model {model!r}: this torch {torch.__version__} cannot load AOTInductor packages"
            ) from None
        try:
            compiled = aoti_load_package(str(path))
        except Exception as exc:
            raise PyTritonTorchModelError(
                f"model {model!r}: failed to load the AOTInductor package {path.name}: {exc}"
            ) from None
        return Loaded(compiled, compiled, Signature(None, 0))
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise PyTritonTorchModelError(
            f"model {model!r}: failed to load the exported program {path.name}: {exc}"
        ) from None
    module = program.module()
    if device.type != "cpu":
        module = module.to(device)
    return Loaded(module, module, python_signature(module.forward))


def _module_name(model: str, version: int) -> str:
    return f"pytriton_torch_repository_{re.sub(r'[^0-9A-Za-z_]', '_', model)}_v{version}"


def import_model_class(model: str, version: int, path: pathlib.Path) -> type[torch.nn.Module]:
    """The ``torch.nn.Module`` subclass defined in ``model.py`` (classes it imports do not count)."""
    name = _module_name(model, version)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PyTritonTorchModelError(f"model {model!r}: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.parent)
    sys.path.insert(0, folder)  # as in Triton's Python backend: modules next to model.py import
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise PyTritonTorchModelError(
            f"model {model!r}: importing {path.name} failed: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        sys.path.remove(folder)
    classes = [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, torch.nn.Module) and cls.__module__ == name
    ]
    if not classes:
        raise PyTritonTorchModelError(
            f"model {model!r}: {path.name} defines no torch.nn.Module subclass (imported classes do not count)"
        )
    if len(classes) > 1:
        # Prefer the class no other class of the file uses (as a base or a part): the top-level model.
        used = _names_used_by_other_classes(path)
        top = [cls for cls in classes if cls.__name__ not in used]
        if len(top) != 1:
            names = ", ".join(sorted(cls.__name__ for cls in classes))
            raise PyTritonTorchModelError(
                f"model {model!r}: {path.name} defines several torch.nn.Module classes ({names}); "
                "keep one top-level model class in the file"
            )
        classes = top
    return classes[0]


def _names_used_by_other_classes(path: pathlib.Path) -> set[str]:
    """Names each class body of the file mentions, other than its own (read from the source)."""
    used: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Name) and inner.id != node.name:
                    used.add(inner.id)
                elif isinstance(inner, ast.Attribute) and inner.attr != node.name:
                    used.add(inner.attr)
    return used


def load_weights(model: str, path: pathlib.Path, allow_pickle: bool) -> Any:
    """``torch.load`` on CPU; ``weights_only=True`` unless ``allow_pickle``."""
    if allow_pickle:
        LOGGER.warning(
            "model %r: loading %s with full unpickling (allow_pickle=True): the file can run any code; "
            "only do this for files you trust",
            model,
            path.name,
        )
    try:
        return torch.load(str(path), map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0]
        raise PyTritonTorchModelError(
            f"model {model!r}: {path.name} cannot be loaded with torch.load(weights_only=True): {first} "
            "Save a state_dict instead, or pass allow_pickle=True if you trust the file"
        ) from None
    except Exception as exc:
        raise PyTritonTorchModelError(
            f"model {model!r}: cannot read weights {path.name}: {type(exc).__name__}: {exc}"
        ) from None


def load_python(
    model: str,
    version: int,
    model_py: pathlib.Path,
    weights: pathlib.Path | None,
    device: torch.device,
    settings: TorchSettings,
    allow_pickle: bool,
) -> Loaded:
    """Instantiate the class of ``model.py`` (no arguments), load its weights, move it to ``device``."""
    cls = import_model_class(model, version, model_py)
    try:
        module: Any = cls()
    except Exception as exc:
        raise PyTritonTorchModelError(
            f"model {model!r}: {cls.__name__}() failed: {type(exc).__name__}: {exc}"
        ) from None
    if weights is not None:
        state = load_weights(model, weights, allow_pickle)
        if isinstance(state, torch.nn.Module):
            module = state  # a whole pickled module (allow_pickle only)
        elif isinstance(state, Mapping):
            try:
                module.load_state_dict(state)
            except RuntimeError as exc:
                raise PyTritonTorchModelError(
                    f"model {model!r}: {weights.name} does not fit {cls.__name__}: {exc}"
                ) from None
        else:
            raise PyTritonTorchModelError(
                f"model {model!r}: {weights.name} holds {type(state).__name__}; expected a state_dict"
            )
    module = module.to(device).eval()
    method = _served(model, module, settings)
    signature = python_signature(method)
    if settings.compile_options is not None:
        LOGGER.info("model %r: torch.compile(%s)", model, settings.compile_options)
        method = torch.compile(method, **settings.compile_options)
    return Loaded(module, method, signature)
