"""scripts/gpu_probe.py (the GPU check's round trip) against a real server in this environment."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.skipif(int(np.__version__.split(".")[0]) >= 2, reason="the stub path needs numpy < 2")
def test_probe_round_trips_fp32_and_bytes_through_a_served_model() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_probe.py"), "--torch"],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["fp32_ok"] and report["bytes_ok"]
    assert report["numpy"] == np.__version__
    assert "torch_numpy_ok" in report or "No module named 'torch'" in report.get("torch_error", "")
