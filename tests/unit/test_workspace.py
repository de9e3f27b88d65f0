"""Workspace folder: path length limit, owner record, stale-workspace removal."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from pytriton_torch._server._workspace import (
    ROOT_MAX,
    SOCKET_PATH_MAX,
    Workspace,
    check_root_length,
    remove_stale_workspaces,
)
from pytriton_torch.exceptions import PyTritonTorchValidationError


@pytest.fixture
def tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[pathlib.Path]:
    """A private, short temp folder standing in for /tmp (pytest's tmp_path is too long here)."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix="ptw-"))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    shutil.rmtree(folder)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _fake(tmp: pathlib.Path, name: str, owner: dict[str, int] | None) -> pathlib.Path:
    folder = tmp / name
    (folder / "models").mkdir(parents=True)
    if owner is not None:
        (folder / "owner.json").write_text(json.dumps(owner))
    return folder


def test_path_limit_leaves_room_for_the_longest_socket_name(tmp_path: pathlib.Path) -> None:
    longest_socket = "x" * ROOT_MAX + "/ipc/" + "0" * 12 + "." + "9" * 9
    assert len(longest_socket) == SOCKET_PATH_MAX
    check_root_length("/" + "a" * (ROOT_MAX - 1))
    with pytest.raises(PyTritonTorchValidationError, match=r"at most \d+ bytes fit.*shorter path"):
        check_root_length("/" + "a" * ROOT_MAX)
    long = tmp_path / ("b" * ROOT_MAX)
    with pytest.raises(PyTritonTorchValidationError):
        Workspace(long)
    assert not long.exists()


def test_default_workspace_records_its_owner_and_a_given_one_does_not(tmp: pathlib.Path) -> None:
    default = Workspace()
    given = Workspace(tmp / "mine")
    try:
        assert default.root.parent == tmp and default.root.name.startswith(f"pytriton_torch-{os.getpid()}-")
        assert json.loads((default.root / "owner.json").read_text())["pid"] == os.getpid()
        assert not (given.root / "owner.json").exists()
        assert remove_stale_workspaces() == 0  # ours: this process is alive
    finally:
        default.remove()
        given.remove()


def test_only_our_workspaces_of_gone_owners_are_removed(tmp: pathlib.Path) -> None:
    namespace = os.stat("/proc/self/ns/pid").st_ino
    dead = _dead_pid()
    stale = _fake(tmp, "pytriton_torch-stale", {"pid": dead, "pid_namespace": namespace})
    live = _fake(tmp, "pytriton_torch-live", {"pid": os.getppid(), "pid_namespace": namespace})
    other_namespace = _fake(tmp, "pytriton_torch-elsewhere", {"pid": dead, "pid_namespace": namespace + 1})
    no_record = _fake(tmp, "pytriton_torch-foreign", None)
    other_name = _fake(tmp, "someone-else", {"pid": dead, "pid_namespace": namespace})
    link = tmp / "pytriton_torch-link"
    link.symlink_to(stale)
    assert remove_stale_workspaces() == 1
    assert not stale.exists()
    assert all(p.exists() for p in (live, other_namespace, no_record, other_name))
