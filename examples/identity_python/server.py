"""Serve "Identity": returns its float and bytes inputs unchanged (trailing NUL bytes included)."""

from __future__ import annotations

import logging

import numpy as np

from pytriton_torch.decorators import batch
from pytriton_torch.model_config import ModelConfig, Tensor
from pytriton_torch.triton import Triton

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


@batch
def identity(values: np.ndarray, texts: np.ndarray) -> dict[str, np.ndarray]:
    return {"values_out": values, "texts_out": texts}


def main() -> None:
    with Triton() as triton:
        triton.bind(
            model_name="Identity",
            infer_func=identity,
            inputs=[
                Tensor(name="values", dtype=np.float32, shape=(-1,)),
                Tensor(name="texts", dtype=bytes, shape=(1,)),
            ],
            outputs=[
                Tensor(name="values_out", dtype=np.float32, shape=(-1,)),
                Tensor(name="texts_out", dtype=bytes, shape=(1,)),
            ],
            config=ModelConfig(max_batch_size=64),
        )
        triton.serve()


if __name__ == "__main__":
    main()
