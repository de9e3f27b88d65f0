"""Serve "ParamsHeaders": scales its input by a request parameter and echoes a forwarded HTTP header.

Triton forwards the HTTP headers whose names match ``http_header_forward_pattern`` (a regular
expression) to the model as request parameters; the pattern must be set in TritonConfig.
"""

from __future__ import annotations

import logging

import numpy as np

from pytriton_torch import Request
from pytriton_torch.model_config import ModelConfig, Tensor
from pytriton_torch.triton import Triton, TritonConfig

LOGGER = logging.getLogger("examples.use_parameters_and_headers.server")


def infer(requests: list[Request]) -> list[dict[str, np.ndarray]]:
    """Undecorated: one Request per client request, one response dict per request, in order."""
    responses = []
    for request in requests:
        # request parameters and the forwarded headers both land in `request.parameters`
        scale = float(request.parameters.get("scale", 1.0))
        tag = str(request.parameters.get("header_tag", "<no header>"))
        x = request["x"]
        responses.append(
            {"y": x * np.float32(scale), "tag": np.full((x.shape[0], 1), tag.encode(), dtype=object)}
        )
    return responses


def bind_models(triton: Triton) -> None:
    """Bind the models; ``pytriton-torch serve path/to/this/server.py`` calls this too."""
    triton.bind(
        model_name="ParamsHeaders",
        infer_func=infer,
        inputs=[Tensor(name="x", dtype=np.float32, shape=(-1,))],
        outputs=[
            Tensor(name="y", dtype=np.float32, shape=(-1,)),
            Tensor(name="tag", dtype=bytes, shape=(1,)),
        ],
        config=ModelConfig(max_batch_size=8),
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Ports still come from the defaults / PYTRITON_TRITON_CONFIG_* variables: only the pattern is set here.
    config = TritonConfig(http_header_forward_pattern="header.*", grpc_header_forward_pattern="header.*")
    with Triton(config=config) as triton:
        bind_models(triton)
        LOGGER.info("Serving 'ParamsHeaders' on %s and %s; Ctrl-C to stop", triton.http_url, triton.grpc_url)
        triton.serve()


if __name__ == "__main__":
    main()
