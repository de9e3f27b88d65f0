"""Pure helpers of bind_module and the torch adapter (no server)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytriton_torch import DeviceKind, DynamicBatcher, ModelConfig
from pytriton_torch._torch._adapter import TorchInfer, resolve_device
from pytriton_torch._torch._bind import _graph_sizes, resolve_devices
from pytriton_torch._types import Request
from pytriton_torch.exceptions import PyTritonTorchInferenceError, PyTritonTorchValidationError


def test_graph_sizes_default_to_powers_of_two_up_to_the_max() -> None:
    assert _graph_sizes(True, ModelConfig(max_batch_size=20)) == [1, 2, 4, 8, 16, 20]
    assert _graph_sizes(False, ModelConfig(max_batch_size=20)) == []


def test_graph_sizes_follow_preferred_sizes_or_the_given_list() -> None:
    config = ModelConfig(max_batch_size=32, batcher=DynamicBatcher(preferred_batch_size=[8, 16]))
    assert _graph_sizes(True, config) == [8, 16, 32]
    assert _graph_sizes([4, 1, 4], config) == [1, 4]
    with pytest.raises(PyTritonTorchValidationError, match=r"between 1 and max_batch_size=32"):
        _graph_sizes([64], config)


def test_devices_are_spread_round_robin() -> None:
    assert resolve_devices(["cpu", "cpu"], 3) == [torch.device("cpu")] * 3
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(PyTritonTorchValidationError, match="device list is empty"):
        resolve_devices([], 1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_device_without_cuda_is_refused() -> None:
    with pytest.raises(PyTritonTorchValidationError, match="CUDA is not available"):
        resolve_device("cuda:0")


def test_torch_infer_converts_views_without_copying_and_keeps_bytes() -> None:
    seen = {}

    def fn(requests: list[Request]) -> list[dict[str, torch.Tensor]]:
        seen.update(requests[0].data)
        return [{"y": requests[0]["x"] * 2}]

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    names = np.array([[b"a"], [b"b"]], dtype=object)
    wrapped = TorchInfer(fn, torch.device("cpu"), model_name="m")
    (result,) = wrapped([Request({"x": x, "names": names}, {"p": 1}, None, "id-1")])
    assert isinstance(seen["x"], torch.Tensor) and seen["x"].data_ptr() == x.ctypes.data
    assert seen["names"] is names
    assert torch.equal(result["y"], torch.from_numpy(x) * 2)
    assert wrapped.__wrapped__ is fn and wrapped.pinned is None and wrapped.stream is None


def test_torch_infer_translates_errors_of_generators() -> None:
    def fn(requests: list[Request]):  # type: ignore[no-untyped-def]
        yield [{"y": requests[0]["x"]}]
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")

    wrapped = TorchInfer(fn, torch.device("cpu"), model_name="m")
    chunks = wrapped([Request({"x": np.ones((1, 1), dtype=np.float32)})])
    assert next(chunks)[0]["y"].shape == (1, 1)
    with pytest.raises(PyTritonTorchInferenceError, match="out of memory on cpu for a batch of 1"):
        next(chunks)


def test_device_kind_is_a_device() -> None:
    assert resolve_device(DeviceKind.KIND_CPU) == torch.device("cpu")
    assert resolve_device(DeviceKind.KIND_AUTO) == resolve_device("auto")
    assert resolve_devices([DeviceKind.KIND_CPU, "cpu"], 2) == [torch.device("cpu")] * 2
    if torch.cuda.is_available():
        assert resolve_device(DeviceKind.KIND_GPU).type == "cuda"
    else:
        with pytest.raises(PyTritonTorchValidationError, match="CUDA is not available"):
            resolve_device(DeviceKind.KIND_GPU)


def test_bind_wraps_by_type_not_by_a_marker_attribute() -> None:
    """Only a TorchInfer is passed through as is; a user callable with a look-alike attribute is wrapped."""
    from pytriton_torch._model import PinningInfer
    from pytriton_torch.triton import _torch_callables

    class LooksWrapped:
        takes_torch = True
        pinned = object()  # not a PinningInfer: its workers must not use it as segment hooks

        def __call__(self, requests: list[Request]) -> list[dict[str, torch.Tensor]]:
            return [{"y": r["x"]} for r in requests]

    user = LooksWrapped()
    ours = TorchInfer(user, torch.device("cpu"), model_name="m")
    wrapped, kept = _torch_callables("m", [user, ours], "cpu")
    assert isinstance(wrapped, TorchInfer) and wrapped.__wrapped__ is user
    assert kept is ours
    assert isinstance(ours, PinningInfer) and not isinstance(user, PinningInfer)


def test_bound_model_load_error_callback_is_an_explicit_argument() -> None:
    from pytriton_torch._model import BoundModel
    from pytriton_torch.model_config import Tensor

    def fn(requests: list[Request]) -> list[dict[str, np.ndarray]]:
        return [{"y": r["x"]} for r in requests]

    specs = ([Tensor(name="x", dtype=np.float32, shape=(1,))], [Tensor(name="y", dtype=np.float32, shape=(1,))])
    plain = BoundModel("m", [fn], *specs, ModelConfig(), version=1, strict=True)
    assert plain.on_load_error is None
    failures: list[str] = []
    reporting = BoundModel("m", [fn], *specs, ModelConfig(), version=1, strict=True, on_load_error=failures.append)
    assert reporting.on_load_error is not None
    reporting.on_load_error("boom")
    assert failures == ["boom"]
