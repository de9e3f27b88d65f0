"""examples/model_repository: served by load_repository, queried by its client.py (a real subprocess)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import torch

from pytriton_torch import Triton
from tests.integration.conftest import make_config

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "model_repository"


def test_example_repository_serves_and_client_passes() -> None:
    with Triton(config=make_config()) as triton:
        report = triton.load_repository(EXAMPLE)
        assert report.failed == {}
        assert sorted(report.loaded) == ["addsub_torchscript", "model_directory"]
        client = subprocess.run(
            [sys.executable, str(EXAMPLE / "client.py"), "--url", triton.http_url.removeprefix("http://")],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert client.returncode == 0, client.stdout + client.stderr
    assert client.stdout.strip().endswith("OK")


def test_example_weights_match_make_models() -> None:
    sys.path.insert(0, str(EXAMPLE))
    try:
        import make_models  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(EXAMPLE))
    expected = make_models.classifier().state_dict()
    stored = torch.load(EXAMPLE / "model_directory" / "1" / "model.py.pt", weights_only=True)
    assert stored.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(stored[key], value), key
