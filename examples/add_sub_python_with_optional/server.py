"""Serve "AddSubOptional": like AddSub, with two optional inputs.

- ``offset`` is optional and ``@fill_optionals`` supplies a default (0) when a request leaves it out,
  so the function always receives it;
- ``scale`` is optional with no default: it is passed only when the request has it. It is a
  per-request setting that the client repeats on every row, and ``@first_value`` turns it into
  a single number.

Outputs: ``add = (a + b) * scale + offset`` and ``sub = (a - b) * scale + offset``.
"""

from __future__ import annotations

import logging

import numpy as np

from pytriton_torch.decorators import batch, fill_optionals, first_value, group_by_keys
from pytriton_torch.model_config import ModelConfig, Tensor
from pytriton_torch.triton import Triton

LOGGER = logging.getLogger("examples.add_sub_python_with_optional.server")


@fill_optionals(offset=np.array([0.0], dtype=np.float32))  # default per row, without the batch axis
@group_by_keys  # requests with and without `scale` are batched separately
@batch
@first_value("scale")  # (rows, 1) array -> one float
def add_sub(a: np.ndarray, b: np.ndarray, offset: np.ndarray, scale: float = 1.0) -> dict[str, np.ndarray]:
    return {"add": (a + b) * scale + offset, "sub": (a - b) * scale + offset}


def bind_models(triton: Triton) -> None:
    """Bind the models; ``pytriton-torch serve path/to/this/server.py`` calls this too."""
    triton.bind(
        model_name="AddSubOptional",
        infer_func=add_sub,
        inputs=[
            Tensor(name="a", dtype=np.float32, shape=(-1,)),
            Tensor(name="b", dtype=np.float32, shape=(-1,)),
            Tensor(name="offset", dtype=np.float32, shape=(1,), optional=True),
            Tensor(name="scale", dtype=np.float32, shape=(1,), optional=True),
        ],
        outputs=[
            Tensor(name="add", dtype=np.float32, shape=(-1,)),
            Tensor(name="sub", dtype=np.float32, shape=(-1,)),
        ],
        config=ModelConfig(max_batch_size=64),
        strict=True,
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with Triton() as triton:
        bind_models(triton)
        LOGGER.info("Serving 'AddSubOptional' on %s and %s; Ctrl-C to stop", triton.http_url, triton.grpc_url)
        triton.serve()


if __name__ == "__main__":
    main()
