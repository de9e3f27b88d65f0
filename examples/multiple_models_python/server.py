"""Serve two models from one server: "Multiply2" and "Multiply3" (the latter with two instances)."""

from __future__ import annotations

import logging

import numpy as np

from pytriton_torch.decorators import batch
from pytriton_torch.model_config import ModelConfig, Tensor
from pytriton_torch.triton import Triton

LOGGER = logging.getLogger("examples.multiple_models_python.server")


def make_multiplier(factor: float):
    """An infer function that multiplies its input ``x`` by ``factor``."""

    @batch
    def multiply(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": x * np.float32(factor)}

    return multiply


def bind_models(triton: Triton) -> None:
    """Bind the models; ``pytriton-torch serve path/to/this/server.py`` calls this too."""
    inputs = [Tensor(name="x", dtype=np.float32, shape=(-1,))]
    outputs = [Tensor(name="y", dtype=np.float32, shape=(-1,))]
    triton.bind("Multiply2", make_multiplier(2), inputs, outputs, config=ModelConfig(max_batch_size=16))
    # A list of callables gives the model one instance per callable; Triton runs them concurrently.
    triton.bind(
        "Multiply3",
        [make_multiplier(3), make_multiplier(3)],
        inputs,
        outputs,
        config=ModelConfig(max_batch_size=16),
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with Triton() as triton:
        bind_models(triton)
        LOGGER.info("Serving 'Multiply2' and 'Multiply3' on %s and %s", triton.http_url, triton.grpc_url)
        triton.serve()


if __name__ == "__main__":
    main()
