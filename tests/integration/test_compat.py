"""PyTriton 0.7.0 compatibility on a real tritonserver: endpoints, warnings, warm-up files, clients."""

from __future__ import annotations

import json
import logging
import pathlib
import urllib.request
from typing import Any

import numpy as np
import pytest

from pytriton_torch import Tensor, Triton, batch
from pytriton_torch.exceptions import PyTritonTorchValidationError
from tests.conftest import free_port
from tests.integration.conftest import make_config

F32 = np.float32
X = [Tensor(name="x", dtype=F32, shape=(1,))]
Y = [Tensor(name="y", dtype=F32, shape=(1,))]


@batch
def _double(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": x * 2}


def _workspaces() -> set[pathlib.Path]:
    return set(pathlib.Path("/tmp").glob("pytriton_torch-*"))


def test_sagemaker_endpoint_serves_bound_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGEMAKER_TRITON_DEFAULT_MODEL_NAME", "double")
    port = free_port()
    with Triton(config=make_config(allow_sagemaker=True, sagemaker_port=port)) as triton:
        triton.bind("double", _double, inputs=X, outputs=Y)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=10) as response:
            assert response.status == 200
        body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.5]}]}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer: dict[str, Any] = json.loads(response.read())
        assert answer["outputs"][0]["data"] == [3.0]


def test_vertex_ai_is_refused_before_anything_starts() -> None:
    before = _workspaces()
    triton = Triton(config=make_config(allow_vertex_ai=True, vertex_ai_port=free_port()))
    with pytest.raises(PyTritonTorchValidationError, match="allow_vertex_ai"):
        triton.run()
    assert _workspaces() - before == set()


@pytest.mark.parametrize("level", [0, 1])
def test_verbose_logging_warning_once_at_start(level: int, caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="pytriton_torch"),
        Triton(config=make_config(log_verbose=level)) as triton,
    ):
        triton.bind("double", _double, inputs=X, outputs=Y)
    warnings = [r for r in caplog.records if "verbose" in r.getMessage() and r.levelno == logging.WARNING]
    assert len(warnings) == level
    if level:
        assert "log_verbose_level=1" in warnings[0].getMessage()
        assert "slow inference" in warnings[0].getMessage()
