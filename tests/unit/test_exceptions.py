"""The exception hierarchy: its docstring tree is the real tree, and every class in it is raised.

The channel's classes are triggered for real: the transport against a real socket, the proxy's
wait for an answer against a real worker endpoint that never answers or whose process is gone.
"""

from __future__ import annotations

import ast
import inspect
import os
import pathlib
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

import pytriton_torch
from pytriton_torch import exceptions
from pytriton_torch._channel._transport import ChannelClosed, ClientEndpoint, ServerEndpoint

CLASSES = {
    name: cls
    for name, cls in vars(exceptions).items()
    if inspect.isclass(cls) and issubclass(cls, Exception) and cls.__name__ == name  # not the PyTriton aliases
}
ROOT = exceptions.PyTritonTorchError


def _tree() -> dict[str, str | None]:
    """Class name -> parent name, as the module docstring draws it."""
    doc = exceptions.__doc__ or ""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        match = re.search(r"(PyTritonTorch\w+)", line)
        if not match or not re.match(r"^\s*[│├└─ ]*PyTritonTorch\w+\s", line + " "):
            continue
        depth = match.start()
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[match.group(1)] = stack[-1][1] if stack else None
        stack.append((depth, match.group(1)))
    return parents


def test_docstring_tree_lists_every_class_with_its_real_parent() -> None:
    tree = _tree()
    assert set(tree) == set(CLASSES)
    for name, parent in tree.items():
        base = CLASSES[name].__bases__[0]
        assert (base.__name__ if base is not Exception else None) == parent, name


def _constructed_names() -> set[str]:
    """Names called or subclassed anywhere in the package outside exceptions.py."""
    root = pathlib.Path(pytriton_torch.__file__).parent
    names: set[str] = set()
    for path in root.rglob("*.py"):
        if path.name == "exceptions.py" and path.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                names.add(node.func.id)
            elif isinstance(node, ast.ClassDef):  # e.g. ChannelClosed(PyTritonTorchChannelError)
                names.update(b.id for b in node.bases if isinstance(b, ast.Name))
    return names


@pytest.mark.parametrize("name", sorted(set(CLASSES) - {ROOT.__name__}))
def test_every_class_is_raised_somewhere_in_the_package(name: str) -> None:
    assert name in _constructed_names(), f"{name} is in the hierarchy but pytriton_torch never raises it"


def test_transport_errors_are_channel_errors(tmp_path: pathlib.Path) -> None:
    with pytest.raises(exceptions.PyTritonTorchChannelError, match="cannot connect to the worker socket"):
        ClientEndpoint("unix", str(tmp_path / "nobody-listens"))
    address = str(tmp_path / "sock")
    server = ServerEndpoint("unix", address)
    client = ClientEndpoint("unix", address)
    try:
        client.send([b"ping"])
        server.recv()
        server.release()
        assert client.poll(5_000)
        with pytest.raises(exceptions.PyTritonTorchChannelError) as closed:
            client.recv()
        assert isinstance(closed.value, ChannelClosed)
        with pytest.raises(ChannelClosed):  # not a BrokenPipeError from the socket
            for _ in range(100):
                client.send([b"x" * 65536])
    finally:
        client.close()
        server.close()


@pytest.fixture
def proxy_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """The proxy imported outside a Triton stub: only its import needs ``triton_python_backend_utils``."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    monkeypatch.delitem(sys.modules, "pytriton_torch._channel._proxy", raising=False)
    import pytriton_torch._channel._proxy as proxy

    yield proxy
    sys.modules.pop("pytriton_torch._channel._proxy", None)


def _proxy(module: types.ModuleType, address: str, owner_pid: int) -> Any:
    model = module.TritonPythonModel()
    model._model_name = "m"
    model._owner_pid = owner_pid
    model._sock = ClientEndpoint("unix", address)
    return model


def test_proxy_timeout_is_a_timeout_error_with_the_client_message(
    proxy_module: types.ModuleType, tmp_path: pathlib.Path
) -> None:
    address = str(tmp_path / "sock")
    server = ServerEndpoint("unix", address)  # never answers
    model = _proxy(proxy_module, address, os.getpid())
    try:
        with pytest.raises(exceptions.PyTritonTorchTimeoutError) as info:
            model._receive(1, 0.3)
        assert model._message(info.value) == "model 'm': no answer from the infer function within 0.3s"
    finally:
        model._sock.close()
        server.close()


def test_proxy_gone_worker_and_closed_channel_are_channel_errors(
    proxy_module: types.ModuleType, tmp_path: pathlib.Path
) -> None:
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    address = str(tmp_path / "sock")
    server = ServerEndpoint("unix", address)
    model = _proxy(proxy_module, address, int(exited.stdout))
    try:
        with pytest.raises(exceptions.PyTritonTorchChannelError) as gone:
            model._receive(1, None)
        assert model._message(gone.value) == "the process serving model 'm' has exited"
        model._sock.send([b"ping"])
        server.recv()
        server.release()
        with pytest.raises(exceptions.PyTritonTorchChannelError) as closed:
            model._receive(1, None)
        assert model._message(closed.value) == (
            "model 'm': the channel to the serving process broke (peer closed the connection)"
        )
    finally:
        model._sock.close()
        server.close()
