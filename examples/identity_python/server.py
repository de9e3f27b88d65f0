"""Serve "Identity": returns a float64 input and a BYTES input unchanged.

BYTES tensors are declared with ``dtype=bytes`` (``np.bytes_`` and ``object`` work too) and reach the
function as numpy object arrays of ``bytes``; arbitrary bytes, NUL bytes included, travel intact.
"""

from __future__ import annotations

import logging

import numpy as np

from pytriton_torch.decorators import batch
from pytriton_torch.model_config import ModelConfig, Tensor
from pytriton_torch.triton import Triton

LOGGER = logging.getLogger("examples.identity_python.server")


@batch
def identity(values: np.ndarray, blobs: np.ndarray) -> dict[str, np.ndarray]:
    return {"values_out": values, "blobs_out": blobs}


def bind_models(triton: Triton) -> None:
    """Bind the models; ``pytriton-torch serve path/to/this/server.py`` calls this too."""
    triton.bind(
        model_name="Identity",
        infer_func=identity,
        inputs=[
            Tensor(name="values", dtype=np.float64, shape=(-1,)),
            Tensor(name="blobs", dtype=bytes, shape=(1,)),
        ],
        outputs=[
            Tensor(name="values_out", dtype=np.float64, shape=(-1,)),
            Tensor(name="blobs_out", dtype=bytes, shape=(1,)),
        ],
        config=ModelConfig(max_batch_size=64),
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with Triton() as triton:
        bind_models(triton)
        LOGGER.info("Serving 'Identity' on %s and %s; Ctrl-C to stop", triton.http_url, triton.grpc_url)
        triton.serve()


if __name__ == "__main__":
    main()
