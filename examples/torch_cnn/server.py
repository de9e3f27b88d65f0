"""A small CNN classifier served with two instances and dynamic batching.

Both instances share one copy of the weights (they run on the same device) and run concurrently,
each on its own CUDA stream on a GPU. The batcher waits up to 2 ms to group single-image
requests into batches of up to 32. Being a CNN, it is served channels-last (``bind_module``'s
default ``memory_format="auto"``); on CPU each instance gets one intra-op thread.
"""

from __future__ import annotations

import logging

import torch

from pytriton_torch import DynamicBatcher, ModelConfig, Triton

LOGGER = logging.getLogger("examples.torch_cnn.server")


class SmallCNN(torch.nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
        )
        self.head = torch.nn.Linear(32, classes)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.head(self.features(image).flatten(1))
        probs = logits.softmax(dim=1)
        return {"probs": probs, "label": probs.argmax(dim=1)}


def bind_models(triton: Triton) -> None:
    """Bind the model; ``pytriton-torch serve examples/torch_cnn/server.py:bind_models`` calls this too."""
    torch.manual_seed(0)
    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # one thread per instance: no OpenMP barrier across instances
    triton.bind_module(
        "cnn",
        SmallCNN().eval(),
        example_inputs=torch.zeros(1, 3, 32, 32),
        instances=2,
        config=ModelConfig(
            max_batch_size=32, batcher=DynamicBatcher(max_queue_delay_microseconds=2000)
        ),
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with Triton() as triton:
        bind_models(triton)
        LOGGER.info("Serving 'cnn' on %s and %s; Ctrl-C to stop", triton.http_url, triton.grpc_url)
        triton.serve()


if __name__ == "__main__":
    main()
