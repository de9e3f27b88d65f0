"""Serve a randomly initialised torch.nn.Linear(20, 30) on CPU as model "Linear"."""

from __future__ import annotations

import logging

import numpy as np
import torch

from pytriton_torch.decorators import batch
from pytriton_torch.model_config import ModelConfig, Tensor
from pytriton_torch.triton import Triton

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

torch.manual_seed(0)
MODEL = torch.nn.Linear(20, 30).eval()


@batch
def infer(data: np.ndarray) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        return {"result": MODEL(torch.from_numpy(data)).numpy()}


def main() -> None:
    with Triton() as triton:
        triton.bind(
            model_name="Linear",
            infer_func=infer,
            inputs=[Tensor(name="data", dtype=np.float32, shape=(20,))],
            outputs=[Tensor(name="result", dtype=np.float32, shape=(30,))],
            config=ModelConfig(max_batch_size=128),
        )
        print(
            f"serving model 'Linear' on {triton.http_url} and {triton.grpc_url}; Ctrl-C to stop", flush=True
        )
        triton.serve()


if __name__ == "__main__":
    main()
