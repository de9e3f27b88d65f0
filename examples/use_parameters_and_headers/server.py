"""Serve "ParamsHeaders": scales its input by a request parameter and echoes a forwarded header."""

from __future__ import annotations

import logging

import numpy as np

from pytriton_torch import Request
from pytriton_torch.model_config import ModelConfig, Tensor
from pytriton_torch.triton import Triton, TritonConfig

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def infer(requests: list[Request]) -> list[dict[str, np.ndarray]]:
    responses = []
    for request in requests:
        # request parameters and the HTTP headers matching http_header_forward_pattern land here
        scale = float(request.parameters.get("scale", 1.0))
        tag = str(request.parameters.get("header_tag", "<no header>"))
        rows = request["x"].shape[0]
        responses.append({"y": request["x"] * scale, "tag": np.array([[tag.encode()]] * rows, dtype=object)})
    return responses


def main() -> None:
    config = TritonConfig(http_header_forward_pattern="header.*", grpc_header_forward_pattern="header.*")
    with Triton(config=config) as triton:
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
        triton.serve()


if __name__ == "__main__":
    main()
