"""A streaming (decoupled) model whose generator yields torch tensors, one response per step.

``tensors="torch"`` makes the request arrive as torch tensors; every yielded dict of tensors is
sent to the client as soon as it is ready, over gRPC streaming.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch

from pytriton_torch import ModelConfig, Request, Tensor, Triton

LOGGER = logging.getLogger("examples.torch_streaming.server")


def count_up(requests: list[Request]) -> Iterator[list[dict[str, torch.Tensor]]]:
    """Yield ``start``, ``start + 1``, ... ``steps`` times (a stand-in for token generation)."""
    (request,) = requests  # max_batch_size=1: one request per call
    value, steps = request["start"].clone(), int(request["steps"][0, 0])
    for _ in range(steps):
        yield [{"value": value}]
        value = value + 1


def bind_models(triton: Triton) -> None:
    """Bind the model; ``pytriton-torch serve examples/torch_streaming/server.py:bind_models`` too."""
    triton.bind(
        "count_up",
        count_up,
        inputs=[Tensor(name="start", dtype=np.int64, shape=(1,)), Tensor(name="steps", dtype=np.int32, shape=(1,))],
        outputs=[Tensor(name="value", dtype=np.int64, shape=(1,))],
        config=ModelConfig(max_batch_size=1),
        tensors="torch",
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with Triton() as triton:
        bind_models(triton)
        LOGGER.info("Serving 'count_up' (streaming, gRPC %s); Ctrl-C to stop", triton.grpc_url)
        triton.serve()


if __name__ == "__main__":
    main()
