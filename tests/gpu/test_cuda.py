"""CUDA paths of the torch helpers, against a real tritonserver (skipped without a GPU)."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap
import threading
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from pytriton_torch import DynamicBatcher, ModelConfig, Tensor, Triton
from pytriton_torch.decorators import batch
from tests.integration.conftest import make_config

F32 = np.float32
SEEN: dict[str, Any] = {}


@batch
def on_gpu(x: torch.Tensor) -> dict[str, torch.Tensor]:
    SEEN["device"] = x.device
    SEEN["stream"] = torch.cuda.current_stream().cuda_stream
    return {"y": x * 2}


@pytest.fixture(scope="module")
def served() -> Any:
    with Triton(config=make_config()) as triton:
        vec = [Tensor(name="x", dtype=F32, shape=(-1,))]
        triton.bind(
            "on_gpu", on_gpu, vec, [Tensor(name="y", dtype=F32, shape=(-1,))], tensors="torch", device="cuda"
        )
        net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
        config = ModelConfig(max_batch_size=16, batcher=DynamicBatcher(max_queue_delay_microseconds=5000))
        triton.bind_module("mlp", net, example_inputs=torch.zeros(1, 64), instances=2, config=config)
        triton.bind_module(
            "mlp_graphs", net, example_inputs=torch.zeros(1, 64), config=config, cuda_graphs=[1, 4, 16]
        )
        triton.bind_module("mlp_bf16", net, example_inputs=torch.zeros(1, 64), autocast="bfloat16")
        cnn = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
        )
        SEEN["cnn"] = cnn
        SEEN["cnn_runners"] = triton.bind_module(
            "cnn_graphs", cnn, example_inputs=torch.zeros(1, 3, 32, 32), config=config, cuda_graphs=[4, 16]
        )
        yield triton, net


def _client(triton: Triton) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"), concurrency=8)


def _infer(client: Any, model: str, x: np.ndarray, name: str = "x") -> Any:
    item = httpclient.InferInput(name, list(x.shape), "FP32")
    item.set_data_from_numpy(x)
    return client.infer(model, [item])


def test_torch_tensors_arrive_on_the_gpu_on_a_side_stream(served: Any) -> None:
    triton, _ = served
    x = np.arange(100000, dtype=F32).reshape(1, -1)  # in shared memory: page-locked, async copy
    np.testing.assert_array_equal(_infer(_client(triton), "on_gpu", x).as_numpy("y"), x * 2)
    assert SEEN["device"].type == "cuda"
    assert SEEN["stream"] != torch.cuda.default_stream().cuda_stream


def test_module_on_gpu_with_instances_sharing_weights(served: Any) -> None:
    triton, net = served
    x = np.random.default_rng(0).standard_normal((3, 64), dtype=F32)
    y = _infer(_client(triton), "mlp", x, name="input").as_numpy("OUTPUT__0")
    with torch.inference_mode():
        expected = net(torch.from_numpy(x).cuda()).cpu().numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 3, 16])
def test_cuda_graphs_pad_to_the_next_captured_size(served: Any, rows: int) -> None:
    triton, net = served
    x = np.random.default_rng(rows).standard_normal((rows, 64), dtype=F32)
    y = _infer(_client(triton), "mlp_graphs", x, name="input").as_numpy("OUTPUT__0")
    with torch.inference_mode():
        expected = net(torch.from_numpy(x).cuda()).cpu().numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_cnn_runs_channels_last_in_cuda_graphs(served: Any) -> None:
    triton, _ = served
    (runner,) = SEEN["cnn_runners"]
    assert runner.channels_last == {0}
    assert runner.graph_sizes == [4, 16]
    x = np.random.default_rng(3).standard_normal((3, 3, 32, 32), dtype=F32)
    y = _infer(_client(triton), "cnn_graphs", x, name="input").as_numpy("OUTPUT__0")
    with torch.inference_mode():
        expected = SEEN["cnn"](torch.from_numpy(x).cuda()).cpu().numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-3, atol=1e-4)


def test_autocast_bf16_on_gpu(served: Any) -> None:
    triton, _ = served
    y = _infer(_client(triton), "mlp_bf16", np.ones((2, 64), dtype=F32), name="input").as_numpy("OUTPUT__0")
    assert y.shape == (2, 8)


def test_out_of_memory_fails_the_batch_only(served: Any) -> None:
    triton, _ = served

    @batch
    def greedy(x: torch.Tensor) -> dict[str, torch.Tensor]:
        if float(x[0, 0]) > 0:
            torch.empty(int(1e14), dtype=torch.uint8, device=x.device)  # far beyond any GPU
        return {"y": x}

    vec = [Tensor(name="x", dtype=F32, shape=(-1,))]
    triton.bind(
        "greedy", greedy, vec, [Tensor(name="y", dtype=F32, shape=(-1,))], tensors="torch", device="cuda"
    )
    client = _client(triton)
    with pytest.raises(InferenceServerException, match="out of memory on cuda"):
        _infer(client, "greedy", np.ones((1, 2), dtype=F32))
    np.testing.assert_array_equal(_infer(client, "greedy", np.zeros((1, 2), dtype=F32)).as_numpy("y"), 0)


def test_device_side_assert_stops_the_server_with_non_zero_exit(tmp_path: Any) -> None:
    """A real device-side assert: the request fails, the server stops, the script exits non-zero."""
    script = tmp_path / "server.py"
    script.write_text(
        textwrap.dedent(
            """
        import numpy as np, torch
        from pytriton_torch import Tensor, Triton
        from pytriton_torch.decorators import batch
        from tests.integration.conftest import make_config

        @batch
        def index(x):
            table = torch.zeros(4, device=x.device)
            return {"y": table[x.long()].float()}  # out-of-range index: device-side assert

        with Triton(config=make_config(http_port=int(__import__("sys").argv[1]))) as triton:
            vec = [Tensor(name="x", dtype=np.float32, shape=(-1,))]
            triton.bind("index", index, vec, vec, tensors="torch", device="cuda")
            triton.serve()
        """
        )
    )
    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(port)], cwd=str(pathlib.Path(__file__).resolve().parents[2])
    )
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        for _ in range(600):
            try:
                if client.is_model_ready("index"):
                    break
            except Exception:
                pass
            threading.Event().wait(0.2)
        with pytest.raises(InferenceServerException, match=r"CUDA error.*restart"):
            _infer(client, "index", np.array([[100.0]], dtype=F32))
        assert proc.wait(60) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
