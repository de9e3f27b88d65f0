"""Unit tests for pytriton_torch._batching (gather requests into a batch, split outputs back)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from pytriton_torch import _batching
from pytriton_torch.exceptions import PyTritonTorchInferenceError, PyTritonTorchValidationError


def test_gather_numpy_joins_along_dim0() -> None:
    parts = [np.zeros((2, 3), np.float32), np.ones((1, 3), np.float32)]
    batch = _batching.gather(parts)
    assert isinstance(batch, np.ndarray)
    assert batch.shape == (3, 3)
    np.testing.assert_array_equal(batch[2], np.ones(3))


def test_gather_torch_joins_along_dim0() -> None:
    batch = _batching.gather([torch.zeros(2, 3), torch.ones(4, 3)])
    assert isinstance(batch, torch.Tensor)
    assert tuple(batch.shape) == (6, 3)


def test_gather_single_part_is_not_copied() -> None:
    part = np.arange(4)
    assert _batching.gather([part]) is part
    tensor = torch.arange(4)
    assert _batching.gather([tensor]) is tensor


def test_gather_mixed_parts_become_numpy() -> None:
    batch = _batching.gather([np.zeros((1, 2)), [[1.0, 2.0]]])
    assert isinstance(batch, np.ndarray)
    assert batch.shape == (2, 2)


def test_gather_no_requests_is_a_clear_error() -> None:
    with pytest.raises(PyTritonTorchValidationError, match="no requests"):
        _batching.gather([])


def test_gather_zero_row_requests() -> None:
    batch = _batching.gather([np.zeros((0, 3)), np.ones((2, 3)), np.zeros((0, 3))])
    assert batch.shape == (2, 3)


def test_gather_shape_mismatch_raises_from_numpy() -> None:
    with pytest.raises(ValueError):
        _batching.gather([np.zeros((1, 2)), np.zeros((1, 3))])


def test_split_by_sizes_numpy_and_torch() -> None:
    outputs = {"y": np.arange(6).reshape(6, 1), "z": torch.arange(6)}
    parts = _batching.split(outputs, [1, 2, 3])
    assert [p["y"].shape[0] for p in parts] == [1, 2, 3]
    assert [int(p["z"].shape[0]) for p in parts] == [1, 2, 3]
    np.testing.assert_array_equal(parts[2]["y"].reshape(-1), [3, 4, 5])
    assert parts[1]["z"].tolist() == [1, 2]


def test_split_parts_are_views() -> None:
    array = np.arange(4)
    parts = _batching.split({"y": array}, [2, 2])
    assert parts[1]["y"].base is array


def test_split_single_request_returns_outputs_as_they_are() -> None:
    outputs = {"y": np.arange(3)}
    assert _batching.split(outputs, [3])[0] is outputs


def test_split_no_requests_is_empty() -> None:
    assert _batching.split({"y": np.arange(3)}, []) == []


def test_split_zero_row_requests() -> None:
    parts = _batching.split({"y": np.arange(2)}, [0, 2, 0])
    assert [p["y"].shape[0] for p in parts] == [0, 2, 0]


def test_split_mismatched_rows_names_output_and_expected_size() -> None:
    with pytest.raises(PyTritonTorchValidationError, match=r"output 'y' has batch size 5; expected batch size 6"):
        _batching.split({"x": np.arange(6), "y": np.arange(5)}, [3, 3])


def test_split_output_without_batch_axis_is_an_error() -> None:
    with pytest.raises(PyTritonTorchValidationError, match=r"output 'y' has no batch axis; expected batch size 2"):
        _batching.split({"y": np.float32(1.0)}, [1, 1])


def test_split_mismatch_callback_chooses_the_error() -> None:
    def mismatch(name: str, value: object, total: int) -> Exception:
        return PyTritonTorchInferenceError(f"custom {name} {total}")

    with pytest.raises(PyTritonTorchInferenceError, match="custom y 4"):
        _batching.split({"y": np.arange(3)}, [2, 2], mismatch=mismatch)


def test_split_mismatch_callback_may_accept_a_single_request() -> None:
    outputs = {"y": np.arange(5)}
    assert _batching.split(outputs, [1], mismatch=lambda *_: None) == [outputs]


def test_rows() -> None:
    assert _batching.rows(np.zeros((4, 2))) == 4
    assert _batching.rows(np.float32(1)) == 1
    assert _batching.rows(torch.zeros(0, 3)) == 0
    assert _batching.rows(b"x") == 1


def test_is_torch() -> None:
    assert _batching.is_torch(torch.zeros(1))
    assert not _batching.is_torch(np.zeros(1))


def test_import_does_not_import_torch() -> None:
    code = "import sys, pytriton_torch._batching, pytriton_torch; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
