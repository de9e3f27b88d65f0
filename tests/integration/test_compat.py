"""PyTriton 0.7.0 compatibility on a real tritonserver: endpoints, warnings, warm-up files, clients."""

from __future__ import annotations

import contextlib
import json
import logging
import pathlib
import subprocess
import sys
import urllib.request
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from pytriton_torch import DeviceKind, DynamicBatcher, ModelConfig, Tensor, Triton, batch, pad_batch
from pytriton_torch.exceptions import PyTritonTorchInvalidOperationError, PyTritonTorchValidationError
from pytriton_torch.model_config.common import ModelWarmup, WarmupInput
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


def test_sagemaker_endpoint_is_refused_without_the_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTRITON_TORCH_ALLOW_SAGEMAKER", raising=False)
    before = _workspaces()
    triton = Triton(config=make_config(allow_sagemaker=True, sagemaker_port=free_port()))
    with pytest.raises(PyTritonTorchValidationError, match="PYTRITON_TORCH_ALLOW_SAGEMAKER=1"):
        triton.run()
    assert _workspaces() - before == set()


def test_sagemaker_endpoint_serves_bound_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setenv("SAGEMAKER_TRITON_DEFAULT_MODEL_NAME", "double")
    monkeypatch.setenv("PYTRITON_TORCH_ALLOW_SAGEMAKER", "1")
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
        # Why it needs the opt-in: its multi-model API loads a folder's model without any token.
        (tmp_path / "other" / "1").mkdir(parents=True)
        (tmp_path / "other" / "config.pbtxt").write_text(
            'backend: "python"\ninput [{name: "a" data_type: TYPE_FP32 dims: [1]}]\n'
            'output [{name: "b" data_type: TYPE_FP32 dims: [1]}]\n'
        )
        (tmp_path / "other" / "1" / "model.py").write_text(
            "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"
        )
        load = urllib.request.Request(
            f"http://127.0.0.1:{port}/models",
            data=json.dumps({"model_name": "other", "url": str(tmp_path)}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(load, timeout=60) as response:
            assert response.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/models", timeout=10) as response:
            assert [m["modelName"] for m in json.loads(response.read())["models"]] == ["other"]


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


def test_warmup_from_npy_file_feeds_its_values_before_the_model_serves(
    triton: Triton, tmp_path: pathlib.Path
) -> None:
    rows = np.array([[1.5], [2.5]], dtype=np.float64)  # cast to FP32, as PyTriton does
    np.save(tmp_path / "x.npy", rows)
    seen: list[list[float]] = []

    @batch
    def record(x: np.ndarray) -> dict[str, np.ndarray]:
        seen.append(x.ravel().tolist())
        return {"y": x * 2}

    sample = ModelWarmup(
        name="file",
        batch_size=3,
        count=1,
        inputs={"x": WarmupInput(dtype=F32, shape=(1,), input_data_file=str(tmp_path / "x.npy"))},
    )
    triton.bind("npy_warm", record, inputs=X, outputs=Y, config=ModelConfig(model_warmup=[sample]))
    assert seen == [[1.5, 2.5, 1.5]]
    client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
    data = httpclient.InferInput("x", [1, 1], "FP32")
    data.set_data_from_numpy(np.array([[4.0]], dtype=F32))
    assert client.infer("npy_warm", [data]).as_numpy("y").tolist() == [[8.0]]
    assert seen[-1] == [4.0]


def test_bind_trace_config_is_refused_not_ignored(triton: Triton) -> None:
    with pytest.raises(PyTritonTorchValidationError, match=r"'traced'.*TritonConfig\(trace_config"):
        triton.bind("traced", _double, inputs=X, outputs=Y, trace_config=["mode=opentelemetry"])
    triton.bind("traced", _double, inputs=X, outputs=Y, trace_config=None)  # nothing was left bound


CLIENT_SCRIPT = """
import sys
import numpy as np
from pytriton_torch.client import FuturesModelClient, ModelClient

with ModelClient(sys.argv[1], "double", init_timeout_s=60) as client:
    print(client.infer_batch(x=np.array([[1.0], [2.0]], dtype=np.float32))["y"].ravel().tolist())
with FuturesModelClient(sys.argv[1], "double") as client:
    print(client.infer_sample(x=np.array([3.0], dtype=np.float32)).result()["y"].tolist())
"""


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_pytriton_client_script_renamed_to_pytriton_torch(
    triton: Triton, tmp_path: pathlib.Path, protocol: str
) -> None:
    with contextlib.suppress(PyTritonTorchInvalidOperationError):  # bound by the other protocol's run
        triton.bind("double", _double, inputs=X, outputs=Y)
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    url = triton.http_url if protocol == "http" else triton.grpc_url
    done = subprocess.run(
        [sys.executable, str(script), url], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[2.0, 4.0]", "[6.0]"]


def test_device_kind_places_torch_tensors(triton: Triton) -> None:
    torch = pytest.importorskip("torch")
    seen: list[str] = []

    @batch
    def on_device(x: Any) -> dict[str, Any]:
        seen.append(str(x.device))
        return {"y": x * 2}

    triton.bind("kind_cpu", on_device, inputs=X, outputs=Y, tensors="torch", device=DeviceKind.KIND_CPU)
    client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
    data = httpclient.InferInput("x", [1, 1], "FP32")
    data.set_data_from_numpy(np.array([[1.0]], dtype=F32))
    assert client.infer("kind_cpu", [data]).as_numpy("y").tolist() == [[2.0]]
    assert seen == ["cpu"]
    module = torch.nn.Linear(1, 1)
    triton.bind_module("kind_module", module, example_inputs=torch.zeros(1, 1), device=DeviceKind.KIND_CPU)
    assert client.is_model_ready("kind_module")


def test_pad_batch_pads_up_to_the_next_preferred_batch_size(triton: Triton) -> None:
    seen: list[int] = []

    @batch
    @pad_batch
    def padded(x: np.ndarray) -> dict[str, np.ndarray]:
        seen.append(len(x))
        return {"y": x * 2}

    config = ModelConfig(max_batch_size=16, batcher=DynamicBatcher(preferred_batch_size=[8, 4]))
    triton.bind("padded", padded, inputs=X, outputs=Y, config=config)
    client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
    for rows in (1, 5, 9):
        data = httpclient.InferInput("x", [rows, 1], "FP32")
        data.set_data_from_numpy(np.arange(rows, dtype=F32).reshape(rows, 1))
        assert client.infer("padded", [data]).as_numpy("y").ravel().tolist() == [2.0 * i for i in range(rows)]
    assert seen == [4, 8, 16]
