"""bind_module: torch modules served for real on CPU."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import psutil
import pytest
import torch
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from pytriton_torch import ModelConfig, Tensor, Triton
from pytriton_torch.exceptions import PyTritonTorchValidationError

F32 = np.float32


class TwoHeads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, image: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.lin(image) * scale
        return {"logits": logits, "best": logits.argmax(dim=1)}

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        return self.lin(image)

    def pair(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return image + 1, image.sum(dim=1, keepdim=True)


class Picky(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x < 0).any()):
            raise ValueError("picky module refuses negative values")
        return x * 3


class DtypeProbe(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        return torch.full((x.shape[0], 1), 1.0 if y.dtype == torch.bfloat16 else 0.0)


class HalfOut(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 2).to(torch.bfloat16)


NET = TwoHeads().eval()


@pytest.fixture(scope="module")
def served(triton: Triton) -> Triton:
    config = ModelConfig(max_batch_size=16)
    triton.bind_module(
        "heads", NET, example_inputs=(torch.zeros(2, 4), torch.ones(2, 1)), instances=2, config=config
    )
    triton.bind_module("embed", NET, method="embed", example_inputs=torch.zeros(1, 4), config=config)
    triton.bind_module(
        "pair",
        NET,
        method="pair",
        example_inputs={"img": torch.zeros(1, 4)},
        config=config,
        outputs=[Tensor(name="plus_one", dtype=F32, shape=(4,)), Tensor(name="total", dtype=F32, shape=(1,))],
    )
    triton.bind_module("picky", Picky(), example_inputs=torch.ones(1, 2), config=config)
    triton.bind_module(
        "bf16", DtypeProbe(), example_inputs=torch.ones(1, 4), autocast="bfloat16", config=config
    )
    triton.bind_module("scripted", torch.jit.script(Picky()), example_inputs=torch.ones(1, 2), config=config)
    triton.bind_module("varlen", NET, method="pair", example_inputs=torch.zeros(1, 4), config=config)
    batch_dim = torch.export.Dim("batch", max=16)
    program = torch.export.export(
        TwoHeads().eval(),
        (torch.zeros(2, 4), torch.ones(2, 1)),
        dynamic_shapes={"image": {0: batch_dim}, "scale": {0: batch_dim}},
    )
    triton.bind_module(
        "exported", program, example_inputs=(torch.zeros(2, 4), torch.ones(2, 1)), config=config
    )
    triton.bind_module("half_out", HalfOut(), example_inputs=torch.ones(1, 3), config=config)
    return triton


def _infer(triton: Triton, model: str, **arrays: np.ndarray) -> httpclient.InferResult:
    client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
    inputs = []
    for name, array in arrays.items():
        item = httpclient.InferInput(name, list(array.shape), "FP32")
        item.set_data_from_numpy(array)
        inputs.append(item)
    return client.infer(model, inputs)


def _config(triton: Triton, model: str) -> dict:
    client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
    return client.get_model_config(model)


def test_specs_derived_from_signature_and_dict_outputs(served: Triton) -> None:
    config = _config(served, "heads")
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
        ("image", "TYPE_FP32", [4]),
        ("scale", "TYPE_FP32", [1]),
    ]
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [
        ("logits", "TYPE_FP32", [3]),
        ("best", "TYPE_INT64", [1]),
    ]
    assert len(config["instance_group"]) == 1 and config["instance_group"][0]["count"] == 2
    x = np.random.default_rng(0).random((3, 4), dtype=F32)
    result = _infer(served, "heads", image=x, scale=np.full((3, 1), 2, dtype=F32))
    with torch.no_grad():
        expected = NET.lin(torch.from_numpy(x)) * 2
    assert np.allclose(result.as_numpy("logits"), expected.numpy(), atol=1e-6)
    assert result.as_numpy("best").reshape(-1).tolist() == expected.argmax(dim=1).tolist()


def test_other_method_and_tensor_output(served: Triton) -> None:
    config = _config(served, "embed")
    assert [o["name"] for o in config["output"]] == ["OUTPUT__0"]
    x = np.ones((1, 4), dtype=F32)
    with torch.no_grad():
        expected = NET.lin(torch.from_numpy(x)).numpy()
    assert np.allclose(_infer(served, "embed", image=x).as_numpy("OUTPUT__0"), expected, atol=1e-6)


def test_tuple_outputs_renamed_by_explicit_specs(served: Triton) -> None:
    assert [i["name"] for i in _config(served, "pair")["input"]] == ["img"]
    assert [o["name"] for o in _config(served, "varlen")["output"]] == ["OUTPUT__0", "OUTPUT__1"]
    x = np.arange(8, dtype=F32).reshape(2, 4)
    result = _infer(served, "pair", img=x)
    assert np.array_equal(result.as_numpy("plus_one"), x + 1)
    assert result.as_numpy("total").tolist() == [[6.0], [22.0]]


def test_module_exception_fails_the_batch_and_keeps_serving(served: Triton) -> None:
    with pytest.raises(InferenceServerException, match="picky module refuses negative values"):
        _infer(served, "picky", x=-np.ones((1, 2), dtype=F32))
    assert _infer(served, "picky", x=np.ones((1, 2), dtype=F32)).as_numpy("OUTPUT__0").tolist() == [
        [3.0, 3.0]
    ]


def test_autocast_bfloat16_on_cpu(served: Triton) -> None:
    assert _infer(served, "bf16", x=np.ones((2, 4), dtype=F32)).as_numpy("OUTPUT__0").tolist() == [
        [1.0],
        [1.0],
    ]


def test_torchscript_module(served: Triton) -> None:
    assert _infer(served, "scripted", x=np.ones((1, 2), dtype=F32)).as_numpy("OUTPUT__0").tolist() == [
        [3.0, 3.0]
    ]


def test_exported_program(served: Triton) -> None:
    config = _config(served, "exported")
    assert [i["name"] for i in config["input"]] == ["image", "scale"]
    result = _infer(served, "exported", image=np.ones((3, 4), dtype=F32), scale=np.full((3, 1), 2, dtype=F32))
    assert result.as_numpy("logits").shape == (3, 3)
    assert result.as_numpy("best").shape == (3, 1)


def test_bfloat16_output_is_served_as_bf16(served: Triton) -> None:
    output = _config(served, "half_out")["output"][0]
    assert output["data_type"] == "TYPE_BF16"
    y = _infer(served, "half_out", x=np.array([[1.0, 2.5, -3.0]], dtype=F32)).as_numpy("OUTPUT__0")
    assert y.dtype == np.dtype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(y.astype(F32), [[2.0, 5.0, -6.0]])


def test_instances_share_one_copy_of_the_weights(triton: Triton) -> None:
    big = torch.nn.Linear(10_000, 10_000)  # 100M parameters, 400 MB
    process = psutil.Process()
    before = process.memory_info().rss
    runners = triton.bind_module(
        "big", big, example_inputs=torch.zeros(1, 10_000), instances=4, config=ModelConfig(max_batch_size=2)
    )
    grown = process.memory_info().rss - before
    pointers = {r._method.__self__.weight.data_ptr() for r in runners}  # type: ignore[attr-defined]
    assert len(pointers) == 1
    assert grown < 400e6, f"binding 4 instances grew the process by {grown / 1e6:.0f} MB"
    x = np.ones((1, 10_000), dtype=F32)
    with torch.no_grad():
        expected = big(torch.from_numpy(x)).numpy()
    assert np.allclose(_infer(triton, "big", input=x).as_numpy("OUTPUT__0"), expected, atol=1e-4)


def test_torch_compile_small_model(triton: Triton) -> None:
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU())
    triton.bind_module(
        "compiled",
        net,
        example_inputs=torch.zeros(2, 8),
        compile=True,
        dynamic_axes={"input": [0]},
        config=ModelConfig(max_batch_size=4),
    )
    x = np.random.default_rng(1).random((3, 8), dtype=F32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert np.allclose(_infer(triton, "compiled", input=x).as_numpy("OUTPUT__0"), expected, atol=1e-5)


def test_bind_module_errors(triton: Triton) -> None:
    with pytest.raises(PyTritonTorchValidationError, match="has no method 'predict'"):
        triton.bind_module("e1", NET, method="predict", example_inputs=torch.zeros(1, 4))
    with pytest.raises(PyTritonTorchValidationError, match="CUDA is not available"):
        if torch.cuda.is_available():
            pytest.skip("needs a machine without CUDA")
        triton.bind_module("e2", NET, method="embed", example_inputs=torch.zeros(1, 4), device="cuda:0")
    with pytest.raises(PyTritonTorchValidationError, match=r"expected a torch\.Tensor"):
        triton.bind_module("e3", NET, method="embed", example_inputs=[np.zeros((1, 4))])
    with pytest.raises(PyTritonTorchValidationError, match="autocast='int8' is not supported"):
        triton.bind_module("e4", NET, method="embed", example_inputs=torch.zeros(1, 4), autocast="int8")
    with pytest.raises(PyTritonTorchValidationError, match="2 output spec"):
        triton.bind_module(
            "e5",
            NET,
            method="embed",
            example_inputs=torch.zeros(1, 4),
            outputs=[Tensor(name="a", dtype=F32, shape=(3,)), Tensor(name="b", dtype=F32, shape=(3,))],
        )


class TinyCnn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.head = torch.nn.Linear(6, 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(image)).mean(dim=(2, 3)))


class FlatCnn(TinyCnn):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.conv(image)
        return out.view(out.shape[0], -1)[:, :2]  # needs NCHW strides


def test_convolutional_modules_run_channels_last_and_answer_the_same(triton: Triton) -> None:
    torch.manual_seed(0)
    cnn, flat = TinyCnn().eval(), FlatCnn().eval()
    x = np.random.default_rng(2).standard_normal((3, 3, 10, 10)).astype(F32)
    with torch.inference_mode():
        expected = {"cnn": cnn(torch.from_numpy(x)).numpy(), "flat": flat(torch.from_numpy(x)).numpy()}
    config = ModelConfig(max_batch_size=4)
    example = torch.zeros(1, 3, 10, 10)
    (runner,) = triton.bind_module("cnn", cnn, example_inputs=example, config=config)
    assert runner.channels_last == {0}
    assert cnn.conv.weight.is_contiguous(memory_format=torch.channels_last)
    (fallback,) = triton.bind_module("flat", flat, example_inputs=example, config=config)
    assert fallback.channels_last == set()
    (plain,) = triton.bind_module(
        "cnn_nchw", TinyCnn(), example_inputs=example, memory_format="contiguous", config=config
    )
    assert plain.channels_last == set()
    for model in ("cnn", "flat"):
        got = _infer(triton, model, image=x).as_numpy("OUTPUT__0")
        assert np.allclose(got, expected[model], atol=1e-5), model
    with pytest.raises(PyTritonTorchValidationError, match="does not run in channels-last format"):
        triton.bind_module("flat_cl", FlatCnn(), example_inputs=example, memory_format="channels_last")
    with pytest.raises(PyTritonTorchValidationError, match="memory_format='nhwc' is not supported"):
        triton.bind_module("bad_format", TinyCnn(), example_inputs=example, memory_format="nhwc")
