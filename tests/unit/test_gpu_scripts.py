"""scripts/gpu_check.sh and scripts/gpu_bundle.sh on a machine without a GPU (no network, no bundle build)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
CHECK = REPO / "scripts" / "gpu_check.sh"
BUNDLE = REPO / "scripts" / "gpu_bundle.sh"
MIB = 1024 * 1024


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.skipif(_cuda_available(), reason="this machine has a GPU: the check would really run")
def test_gpu_check_without_a_gpu_stops_early_with_a_summary(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    done = _run(["bash", str(CHECK), str(out)], PYTHON=sys.executable)
    assert done.returncode == 2, done.stdout + done.stderr
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("pytriton_torch GPU check: NO_GPU\nno CUDA device visible to ")
    assert "nothing GPU-specific was run" in summary
    report = json.loads((out / "summary.json").read_text())
    assert report["result"] == "NO_GPU"
    assert [(s["step"], s["status"]) for s in report["steps"]] == [("env", "OK"), ("gpu", "NO_GPU")]
    assert "## nvidia-smi" in (out / "env.txt").read_text()
    # What the device tool brings back: at most 8 files, plain names.
    files = sorted(p.name for p in out.iterdir())
    assert files == ["env.txt", "logs.tar.gz", "summary.json", "summary.txt"]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in files)


def test_gpu_check_without_an_output_folder_prints_its_usage() -> None:
    done = _run(["bash", str(CHECK)])
    assert done.returncode == 64
    assert "usage: scripts/gpu_check.sh OUT_DIR" in done.stderr


@pytest.mark.skipif(sys.version_info[:2] == (3, 12), reason="the bundle is for 3.12: install would proceed")
@pytest.mark.skipif(_cuda_available(), reason="this machine has a GPU: the check would really run")
def test_gpu_check_refuses_a_bundle_for_another_python(tmp_path: pathlib.Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "site.tar.xz").write_bytes(b"")
    out = tmp_path / "out"
    done = _run(["bash", str(CHECK), str(out), "--no-gpu", "--bundle", str(bundle)], PYTHON=sys.executable)
    assert done.returncode == 1, done.stdout + done.stderr
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("pytriton_torch GPU check: FAIL\n")
    version = "{}.{}".format(*sys.version_info[:2])
    assert f"the bundle is built for CPython 3.12; {sys.executable} is {version}" in summary
    steps = json.loads((out / "summary.json").read_text())["steps"]
    assert [(s["step"], s["status"]) for s in steps] == [("env", "OK"), ("gpu", "SKIPPED"), ("install", "FAIL")]


def test_gpu_bundle_check_without_a_bundle_says_how_to_make_one(tmp_path: pathlib.Path) -> None:
    done = _run(["bash", str(BUNDLE), "--check"], GPU_BUNDLE_DIR=str(tmp_path / "none"))
    assert done.returncode == 1
    assert "no bundle at" in done.stderr and "run scripts/gpu_bundle.sh first" in done.stderr


def test_gpu_bundle_check_counts_the_bundle_and_the_working_tree(tmp_path: pathlib.Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "site.tar.xz").write_bytes(b"x" * MIB)
    done = _run(["bash", str(BUNDLE), "--check"], GPU_BUNDLE_DIR=str(bundle))
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"working tree \(git, not ignored\)\s+\d+\.\d\d", done.stdout)
    assert "fits:" in done.stdout

    with (bundle / "site.tar.xz").open("wb") as big:  # sparse: apparent size is what travels
        big.truncate(64 * MIB)
    done = _run(["bash", str(BUNDLE), "--check"], GPU_BUNDLE_DIR=str(bundle))
    assert done.returncode == 1
    assert "OVER BUDGET by" in done.stderr


@pytest.mark.skipif(not (REPO / ".gpu_bundle").is_dir(), reason="no bundle: scripts/gpu_bundle.sh not run here")
def test_the_bundle_made_here_fits_the_device_budget() -> None:
    done = _run(["bash", str(BUNDLE), "--check"])
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = (REPO / ".gpu_bundle" / "MANIFEST.txt").read_text()
    assert "site.tar.xz" in manifest and "numpy1.tar.xz" in manifest
