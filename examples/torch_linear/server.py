import torch

from pytriton_torch import Triton

with Triton() as triton:
    triton.bind_module("linear", torch.nn.Linear(4, 2), example_inputs=torch.zeros(1, 4))
    triton.serve()
