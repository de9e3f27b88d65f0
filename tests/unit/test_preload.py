"""The LD_PRELOAD library: built and cached safely, and what it does to a process that loads it."""

from __future__ import annotations

import os
import pathlib
import shutil
import stat
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from pytriton_torch._server import _preload
from pytriton_torch._server._preload import Secrets, preload_library
from pytriton_torch.exceptions import PyTritonTorchServerError

needs_cc = pytest.mark.skipif(
    not any(shutil.which(c) for c in ("cc", "gcc", "clang")), reason="needs a C compiler"
)


@pytest.fixture
def library(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    if not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
        pytest.skip("needs a C compiler")
    return preload_library(tmp_path_factory.mktemp("fallback"))


def _run(
    library: pathlib.Path, code: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env={**os.environ, **(env or {}), "LD_PRELOAD": str(library)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_secrets_become_numbered_placeholders_and_variables() -> None:
    secrets = Secrets()
    assert secrets.hide("abc") == "@@PTT_SECRET_0@@"
    assert secrets.hide("x y=z") == "@@PTT_SECRET_1@@"
    assert secrets.environment() == {"PTT_SECRET_0": "abc", "PTT_SECRET_1": "x y=z"}


def test_the_program_sees_the_secret_but_proc_and_children_do_not(library: pathlib.Path) -> None:
    code = """
        import os, sys
        cmdline = open("/proc/self/cmdline", "rb").read()
        environ = open("/proc/self/environ", "rb").read()
        print(sys.argv[1:])
        # not spelled out: this code is on the command line too
        secret, placeholder = b"s3" + b"cret", b"@@PTT_" + b"SECRET_0@@"
        print(secret in cmdline, placeholder in cmdline, secret in environ)
        print("PTT_SECRET_0" in os.environ, "PTT_SECRET_1" in os.environ)
    """
    done = _run(
        library,
        code,
        "--rule=api:key=@@PTT_SECRET_0@@",
        "@@PTT_SECRET_1@@/@@PTT_SECRET_0@@",
        "plain",
        env={"PTT_SECRET_0": "s3cret", "PTT_SECRET_1": "two words"},
    )
    assert done.returncode == 0, done.stderr
    argv, proc, env = done.stdout.splitlines()
    assert argv == "['--rule=api:key=s3cret', 'two words/s3cret', 'plain']"
    assert proc == "False True False"  # /proc shows the placeholder; the variable's bytes are wiped
    assert env == "False False"  # and unset: children do not inherit it


def test_a_placeholder_without_its_value_stops_the_process(library: pathlib.Path) -> None:
    done = _run(library, "print('ran')", "--token=@@PTT_SECRET_7@@")
    assert done.returncode == 2 and "ran" not in done.stdout
    assert "no value" in done.stderr


def test_shared_memory_is_created_and_kept_owner_only(library: pathlib.Path, tmp_path: pathlib.Path) -> None:
    code = """
        import os, stat, sys, _posixshmem
        name = f"/ptt-preload-test-{os.getpid()}"
        fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        try:
            created = stat.S_IMODE(os.fstat(fd).st_mode)
            os.fchmod(fd, 0o666)
            after = stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            _posixshmem.shm_unlink(name)
        other = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR, 0o600)
        os.fchmod(other, 0o644)  # not shared memory: left alone
        print(oct(created), oct(after), oct(stat.S_IMODE(os.fstat(other).st_mode)))
    """
    done = _run(library, code, str(tmp_path / "plain"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0o600", "0o600", "0o644"]


def test_a_stub_ends_when_its_parent_is_gone(library: pathlib.Path, tmp_path: pathlib.Path) -> None:
    sleeper = tmp_path / "triton_python_backend_stub"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", sleeper)
    # the shell starts the "stub" in the background and exits: the stub is reparented at once
    done = subprocess.run(
        ["sh", "-c", f'"{sleeper}" 120 >/dev/null 2>&1 & echo $!'],
        env={**os.environ, "LD_PRELOAD": str(library)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    stub = psutil.Process(int(done.stdout))
    try:
        stub.wait(timeout=10)
    except psutil.TimeoutExpired:
        stub.kill()
        pytest.fail("the orphaned stub kept running")
    # a stub that a shell exec'd (same pid) while its parent lives runs to its end
    execd = subprocess.run(
        ["sh", "-c", f'exec "{sleeper}" 0.5'],
        env={**os.environ, "LD_PRELOAD": str(library)},
        timeout=60,
        check=False,
    )
    assert execd.returncode == 0
    other = tmp_path / "sleep"  # any other program keeps running when orphaned
    shutil.copy(sleeper, other)
    done = subprocess.run(
        ["sh", "-c", f'"{other}" 120 >/dev/null 2>&1 & echo $!'],
        env={**os.environ, "LD_PRELOAD": str(library)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    survivor = psutil.Process(int(done.stdout))
    time.sleep(0.5)
    assert survivor.is_running()
    survivor.kill()


@needs_cc
def test_built_once_into_a_private_cache(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = preload_library(tmp_path / "fallback")
    assert first.parent == tmp_path / "cache" / "pytriton_torch"
    assert stat.S_IMODE(first.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(first.stat().st_mode) & 0o022 == 0
    built = first.stat().st_mtime_ns
    assert preload_library(tmp_path / "fallback") == first and first.stat().st_mtime_ns == built
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary file left


@needs_cc
def test_a_cache_others_can_write_is_not_used(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    (shared / "pytriton_torch").mkdir(parents=True)
    os.chmod(shared / "pytriton_torch", 0o777)
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared))
    fallback = tmp_path / "workspace"
    fallback.mkdir(mode=0o700)
    assert preload_library(fallback).parent == fallback
    assert list((shared / "pytriton_torch").iterdir()) == []


def test_no_compiler_is_a_clear_error(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(_preload, "SOURCE", _copy_with_a_new_hash(tmp_path))
    with pytest.raises(PyTritonTorchServerError, match="no-such-compiler"):
        preload_library(tmp_path)
    monkeypatch.delenv("CC")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(PyTritonTorchServerError, match="needs a C compiler"):
        preload_library(tmp_path)


def _copy_with_a_new_hash(tmp_path: pathlib.Path) -> pathlib.Path:
    source = tmp_path / "_preload.c"
    source.write_text(_preload.SOURCE.read_text() + "\n/* test copy */\n")
    return source


@needs_cc
def test_a_library_built_beside_the_package_needs_no_compiler_later(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "package"
    package.mkdir(mode=0o755)
    source = package / "_preload.c"
    source.write_text(_preload.SOURCE.read_text() + "\n/* packaged copy */\n")
    monkeypatch.setattr(_preload, "SOURCE", source)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    built = _preload.build_packaged_library()
    assert built.parent == package and stat.S_IMODE(built.stat().st_mode) == 0o755
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))  # nothing can be compiled from here on
    assert preload_library(tmp_path / "fallback") == built
    os.chmod(built, 0o777)  # a copy others could swap is never used
    with pytest.raises(PyTritonTorchServerError, match="no-such-compiler"):
        preload_library(tmp_path / "fallback")


@needs_cc
def test_build_command_reports_the_library(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from pytriton_torch.cli import app

    package = tmp_path / "package"
    package.mkdir(mode=0o755)
    monkeypatch.setattr(_preload, "SOURCE", _copy_with_a_new_hash(package))
    backend = package / "_backend.c"
    backend.write_text(_preload.BACKEND_SOURCE.read_text() + "\n/* test copy */\n")
    monkeypatch.setattr(_preload, "BACKEND_SOURCE", backend)
    result = CliRunner().invoke(app, ["build"])
    assert result.exit_code == 0, result.output
    assert "built" in result.output and str(package) in result.output.replace("\n", "")
    assert sorted(p.name.split("-")[0] for p in package.glob("*.so")) == ["_backend", "_preload"]
    os.chmod(package, 0o555)
    try:
        result = CliRunner().invoke(app, ["build"])
        if os.getuid() != 0:  # root writes anyway
            assert result.exit_code == 1 and "cannot write" in result.output
    finally:
        os.chmod(package, 0o755)
