"""Serve "AddSub": two float vectors in, their sum and their difference out.

Ports come from TritonConfig's defaults (HTTP 8000, gRPC 8001, metrics 8002 on 127.0.0.1) or from
the ``PYTRITON_TRITON_CONFIG_*_PORT`` environment variables.
"""

from __future__ import annotations

import logging

import numpy as np

from pytriton_torch.decorators import batch
from pytriton_torch.model_config import ModelConfig, Tensor
from pytriton_torch.triton import Triton

LOGGER = logging.getLogger("examples.add_sub_python.server")


@batch
def add_sub(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Inputs arrive by name as whole batches (rows, n); outputs are returned by name."""
    return {"add": a + b, "sub": a - b}


def bind_models(triton: Triton) -> None:
    """Bind the models; ``pytriton-torch serve path/to/this/server.py`` calls this too."""
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
        strict=True,
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with Triton() as triton:
        bind_models(triton)
        LOGGER.info("Serving 'AddSub' on %s and %s; Ctrl-C to stop", triton.http_url, triton.grpc_url)
        triton.serve()


if __name__ == "__main__":
    main()
