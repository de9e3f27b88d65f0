"""The 30-second version of the soak benchmark (benchmarks/soak.py): zero failed requests."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_soak_30_seconds_32_clients_without_failures(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "soak.py"),
            "--duration", "30",
            "--clients", "32",
            "--interval", "5",
            "--out", str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.exists(), proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["requests_failed"] == 0, report["errors"]
    assert report["requests_ok"] > 0
    assert report["shm_left_after_stop"] == []
    # the table names every measure the report is read for
    for measure in ("owner rss", "tritonserver rss", "stubs rss", "shm used"):
        assert measure in proc.stdout
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
