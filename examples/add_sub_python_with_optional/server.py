"""Serve "AddSubOptional": `a` and `b` required, `weight` optional with a default of 1."""

from __future__ import annotations

import logging

import numpy as np

from pytriton_torch.decorators import batch, fill_optionals
from pytriton_torch.model_config import ModelConfig, Tensor
from pytriton_torch.triton import Triton

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


@fill_optionals(weight=np.array([1.0], dtype=np.float32))
@batch
def add_sub(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> dict[str, np.ndarray]:
    return {"add": (a + b) * weight, "sub": (a - b) * weight}


def main() -> None:
    with Triton() as triton:
        triton.bind(
            model_name="AddSubOptional",
            infer_func=add_sub,
            inputs=[
                Tensor(name="a", dtype=np.float32, shape=(-1,)),
                Tensor(name="b", dtype=np.float32, shape=(-1,)),
                Tensor(name="weight", dtype=np.float32, shape=(1,), optional=True),
            ],
            outputs=[
                Tensor(name="add", dtype=np.float32, shape=(-1,)),
                Tensor(name="sub", dtype=np.float32, shape=(-1,)),
            ],
            config=ModelConfig(max_batch_size=64),
        )
        triton.serve()


if __name__ == "__main__":
    main()
