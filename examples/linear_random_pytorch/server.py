"""Serve a randomly initialised ``torch.nn.Linear(20, 30)`` as model "Linear".

Ports come from TritonConfig's defaults (HTTP 8000, gRPC 8001, metrics 8002 on 127.0.0.1) or from
the ``PYTRITON_TRITON_CONFIG_HTTP_PORT`` / ``..._GRPC_PORT`` / ``..._METRICS_PORT`` variables.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from pytriton_torch.decorators import batch
from pytriton_torch.model_config import ModelConfig, Tensor
from pytriton_torch.triton import Triton

LOGGER = logging.getLogger("examples.linear_random_pytorch.server")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.manual_seed(0)
MODEL = torch.nn.Linear(20, 30).to(DEVICE).eval()


@batch
def infer(data: np.ndarray) -> dict[str, np.ndarray]:
    """``data`` is the whole batch Triton's dynamic batcher formed: shape (rows, 20)."""
    with torch.inference_mode():
        result = MODEL(torch.from_numpy(data).to(DEVICE))
    return {"result": result.cpu().numpy()}


def bind_models(triton: Triton) -> None:
    """Bind the models; ``pytriton-torch serve path/to/this/server.py`` calls this too."""
    triton.bind(
        model_name="Linear",
        infer_func=infer,
        inputs=[Tensor(name="data", dtype=np.float32, shape=(20,))],
        outputs=[Tensor(name="result", dtype=np.float32, shape=(30,))],
        config=ModelConfig(max_batch_size=128),
        strict=True,
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with Triton() as triton:
        bind_models(triton)
        LOGGER.info(
            "Serving 'Linear' on %s and %s (on %s); Ctrl-C to stop", triton.http_url, triton.grpc_url, DEVICE
        )
        triton.serve()


if __name__ == "__main__":
    main()
