"""A module whose forward returns a dict: each key becomes an output of the model."""

from __future__ import annotations

import logging

import torch

from pytriton_torch import ModelConfig, Triton

LOGGER = logging.getLogger("examples.torch_dict_outputs.server")


class Embedder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(8, 4)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        embedding = torch.nn.functional.normalize(self.proj(features), dim=1)
        return {"embedding": embedding, "norm": features.norm(dim=1), "top": embedding.topk(2, dim=1).indices}


def bind_models(triton: Triton) -> None:
    """Bind the model; ``pytriton-torch serve examples/torch_dict_outputs/server.py:bind_models`` too."""
    torch.manual_seed(0)
    triton.bind_module(
        "embedder", Embedder().eval(), example_inputs=torch.zeros(1, 8), config=ModelConfig(max_batch_size=16)
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with Triton() as triton:
        bind_models(triton)
        LOGGER.info("Serving 'embedder' on %s and %s; Ctrl-C to stop", triton.http_url, triton.grpc_url)
        triton.serve()


if __name__ == "__main__":
    main()
