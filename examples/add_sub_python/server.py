"""Serve "AddSub": two float vectors in, their sum and difference out."""

from __future__ import annotations

import logging

import numpy as np

from pytriton_torch.decorators import batch
from pytriton_torch.model_config import ModelConfig, Tensor
from pytriton_torch.triton import Triton

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


@batch
def add_sub(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"add": a + b, "sub": a - b}


def main() -> None:
    with Triton() as triton:
        triton.bind(
            model_name="AddSub",
            infer_func=add_sub,
            inputs=[
                Tensor(name="a", dtype=np.float32, shape=(-1,)),
                Tensor(name="b", dtype=np.float32, shape=(-1,)),
            ],
            outputs=[
                Tensor(name="add", dtype=np.float32, shape=(-1,)),
                Tensor(name="sub", dtype=np.float32, shape=(-1,)),
            ],
            config=ModelConfig(max_batch_size=128),
        )
        triton.serve()


if __name__ == "__main__":
    main()
