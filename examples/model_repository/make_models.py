"""Regenerate the model files of this example repository (deterministic weights).

- ``model_directory/1/model.py.pt``: the ``state_dict`` of ``model_directory/1/model.py``'s class
  (the seed layout: ``backend: "python"`` + ``platform: "pytorch"``).
- ``addsub_torchscript/1/model.pt``: a scripted AddSub module (``platform: "pytorch_libtorch"``).

Run: ``python examples/model_repository/make_models.py``
"""

from __future__ import annotations

import importlib.util
import pathlib

import torch

HERE = pathlib.Path(__file__).resolve().parent


class AddSub(torch.nn.Module):
    """Sum and difference of two tensors; outputs are OUTPUT__0 and OUTPUT__1 by index."""

    def forward(self, INPUT0: torch.Tensor, INPUT1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return INPUT0 + INPUT1, INPUT0 - INPUT1


def classifier() -> torch.nn.Module:
    """An instance of the class defined in model_directory/1/model.py, with seeded weights."""
    spec = importlib.util.spec_from_file_location(
        "example_model", HERE / "model_directory" / "1" / "model.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    return module.LinearClassifier()  # type: ignore[no-any-return]


def main() -> None:
    torch.save(classifier().state_dict(), HERE / "model_directory" / "1" / "model.py.pt")
    torch.jit.save(torch.jit.script(AddSub()), str(HERE / "addsub_torchscript" / "1" / "model.pt"))
    print(f"wrote the model files under {HERE}")


if __name__ == "__main__":
    main()
