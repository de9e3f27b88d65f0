"""Serve two models from one server: "Multiply2" and "Multiply3", the latter with two instances."""

from __future__ import annotations

import logging

import numpy as np

from pytriton_torch.decorators import batch
from pytriton_torch.model_config import ModelConfig, Tensor
from pytriton_torch.triton import Triton

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def multiplier(factor: float):
    @batch
    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": x * factor}

    return infer


def main() -> None:
    inputs = [Tensor(name="x", dtype=np.float32, shape=(-1,))]
    outputs = [Tensor(name="y", dtype=np.float32, shape=(-1,))]
    with Triton() as triton:
        triton.bind("Multiply2", multiplier(2), inputs, outputs, config=ModelConfig(max_batch_size=16))
        # a list of callables: two instances that serve requests concurrently
        triton.bind(
            "Multiply3",
            [multiplier(3), multiplier(3)],
            inputs,
            outputs,
            config=ModelConfig(max_batch_size=16),
        )
        triton.serve()


if __name__ == "__main__":
    main()
