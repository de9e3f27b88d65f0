"""Unit tests of pytriton_torch._channel._validate: checks on what an infer function returned."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pytriton_torch._channel._validate import check_responses, request_batch_size
from pytriton_torch._context import ModelInfo
from pytriton_torch._types import Request
from pytriton_torch.exceptions import PyTritonTorchValidationError
from pytriton_torch.model_config import Tensor


def make_info(
    outputs: dict[str, tuple[Any, tuple[int, ...]]] | None = None, *, batching: bool = True
) -> ModelInfo:
    outputs = {"y": (np.float32, (2,))} if outputs is None else outputs
    return ModelInfo(
        model_name="mymodel",
        inputs=(Tensor(name="x", dtype=np.float32, shape=(2,)),),
        outputs=tuple(Tensor(name=n, dtype=d, shape=s) for n, (d, s) in outputs.items()),
        batching=batching,
        max_batch_size=8 if batching else 0,
    )


def req(batch: int = 3, requested: list[str] | None = None) -> Request:
    return Request({"x": np.zeros((batch, 2), np.float32)}, requested_output_names=requested)


def check(info: ModelInfo, requests: list[Request], responses: Any, *, strict: bool = True) -> Any:
    return check_responses(info, requests, responses, strict=strict)


def raises(match: str) -> Any:
    return pytest.raises(PyTritonTorchValidationError, match=match)


def test_valid_response_passes_through() -> None:
    y = np.ones((3, 2), np.float32)
    out = check(make_info(), [req()], [{"y": y}])
    assert len(out) == 1
    assert list(out[0]) == ["y"]
    assert out[0]["y"] is y


def test_tuple_of_responses_accepted() -> None:
    out = check(
        make_info(),
        [req(1), req(2)],
        ({"y": np.ones((1, 2), np.float32)}, {"y": np.ones((2, 2), np.float32)}),
    )
    assert [o["y"].shape for o in out] == [(1, 2), (2, 2)]


def test_dict_instead_of_list() -> None:
    with raises(
        r"model 'mymodel': the infer function returned a dict; .* must return a list .*\(2 requests\)"
    ):
        check(make_info(), [req(), req()], {"y": np.ones((3, 2), np.float32)})


def test_not_a_list() -> None:
    with raises(r"model 'mymodel': the infer function returned ndarray; expected a list of 1 dicts"):
        check(make_info(), [req()], np.ones((3, 2), np.float32))


def test_wrong_count() -> None:
    with raises(r"model 'mymodel': the infer function returned 1 responses for 2 requests"):
        check(make_info(), [req(), req()], [{"y": np.ones((3, 2), np.float32)}])


def test_non_dict_response() -> None:
    with raises(r"model 'mymodel': a response is list; expected a dict of output name -> array"):
        check(make_info(), [req()], [[np.ones((3, 2), np.float32)]])


def test_unknown_output() -> None:
    with raises(
        r"model 'mymodel': the infer function returned unknown output\(s\) zz; declared outputs are y"
    ):
        check(make_info(), [req()], [{"y": np.ones((3, 2), np.float32), "zz": np.ones(3)}])


def test_missing_output() -> None:
    info = make_info({"y": (np.float32, (2,)), "z": (np.int64, (1,))})
    with raises(r"model 'mymodel': the infer function did not return output\(s\) z$"):
        check(info, [req()], [{"y": np.ones((3, 2), np.float32)}])


def test_requested_output_names_honoured() -> None:
    info = make_info({"y": (np.float32, (2,)), "z": (np.int64, (1,))})
    # z is not requested: it may be missing, and y alone is returned.
    out = check(info, [req(requested=["y"])], [{"y": np.ones((3, 2), np.float32)}])
    assert list(out[0]) == ["y"]
    # z returned with a wrong dtype but not requested: dropped, not checked.
    out = check(
        info, [req(requested=["y"])], [{"y": np.ones((3, 2), np.float32), "z": np.ones(3, np.float16)}]
    )
    assert list(out[0]) == ["y"]
    # only z requested but missing
    with raises(r"model 'mymodel': the infer function did not return output\(s\) z"):
        check(info, [req(requested=["z"])], [{"y": np.ones((3, 2), np.float32)}])


def test_wrong_batch_size() -> None:
    with raises(
        r"model 'mymodel': output 'y' has batch size 2; expected batch size 3 \(the request's batch size\)"
    ):
        check(make_info(), [req(3)], [{"y": np.ones((2, 2), np.float32)}])


def test_batch_size_checked_per_request() -> None:
    responses = [{"y": np.ones((1, 2), np.float32)}, {"y": np.ones((1, 2), np.float32)}]
    with raises(r"output 'y' has batch size 1; expected batch size 4"):
        check(make_info(), [req(1), req(4)], responses)


def test_scalar_output_with_batching() -> None:
    with raises(r"model 'mymodel': output 'y' has a scalar; expected batch size 3"):
        check(make_info(), [req(3)], [{"y": np.float32(1.0)}], strict=False)


def test_scalar_output_without_batching_matches_empty_shape() -> None:
    info = make_info({"y": (np.float32, ())}, batching=False)
    out = check(info, [req(3)], [{"y": np.array(1.5, np.float32)}])
    assert out[0]["y"].shape == ()
    assert out[0]["y"] == np.float32(1.5)


def test_strict_dtype_error() -> None:
    with raises(r"model 'mymodel': output 'y' has dtype float64 \(FP64\); expected float32 \(FP32\)"):
        check(make_info(), [req()], [{"y": np.ones((3, 2), np.float64)}], strict=True)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((3, 3), r"\[3, 3\]"), ((3, 2, 1), r"\[3, 2, 1\]"), ((3,), r"\[3\]")],
)
def test_strict_shape_error(shape: tuple[int, ...], expected: str) -> None:
    with raises(
        rf"model 'mymodel': output 'y' has shape {expected}; expected per-sample shape \[2\] after the batch axis"
    ):
        check(make_info(), [req()], [{"y": np.ones(shape, np.float32)}], strict=True)


def test_strict_shape_error_without_batching_has_no_batch_axis_note() -> None:
    info = make_info(batching=False)
    with pytest.raises(PyTritonTorchValidationError) as exc:
        check(info, [req()], [{"y": np.ones((4,), np.float32)}], strict=True)
    message = str(exc.value)
    assert "model 'mymodel': output 'y' has shape [4]; expected per-sample shape [2]" in message
    assert "batch axis" not in message


def test_variable_dims_accept_any_size() -> None:
    info = make_info({"y": (np.float32, (-1, 4))})
    out = check(info, [req(2)], [{"y": np.ones((2, 7, 4), np.float32)}], strict=True)
    assert out[0]["y"].shape == (2, 7, 4)
    with raises(r"output 'y' has shape \[2, 7, 5\]"):
        check(info, [req(2)], [{"y": np.ones((2, 7, 5), np.float32)}], strict=True)


def test_lenient_shape_mismatch_passes() -> None:
    out = check(make_info(), [req()], [{"y": np.ones((3, 5), np.float32)}], strict=False)
    assert out[0]["y"].shape == (3, 5)


def test_lenient_dtype_conversion() -> None:
    y = np.full((3, 2), 0.5, np.float64)
    out = check(make_info(), [req()], [{"y": y}], strict=False)
    assert out[0]["y"].dtype == np.float32
    np.testing.assert_array_equal(out[0]["y"], np.full((3, 2), 0.5, np.float32))


def test_lenient_int_widening() -> None:
    info = make_info({"y": (np.int64, (2,))})
    out = check(info, [req()], [{"y": np.ones((3, 2), np.int32)}], strict=False)
    assert out[0]["y"].dtype == np.int64


def test_lenient_refuses_float_to_int() -> None:
    info = make_info({"y": (np.int32, (2,))})
    with raises(r"model 'mymodel': output 'y' has dtype float32 \(FP32\); expected int32 \(INT32\)"):
        check(info, [req()], [{"y": np.ones((3, 2), np.float32)}], strict=False)


@pytest.mark.parametrize("strict", [True, False])
def test_bytes_to_numeric_never_converted(strict: bool) -> None:
    info = make_info({"y": (np.float32, (2,))})
    with raises(r"model 'mymodel': output 'y' has dtype object \(BYTES\); expected float32 \(FP32\)"):
        check(info, [req()], [{"y": np.array([[b"1", b"2"]] * 3, dtype=object)}], strict=strict)


@pytest.mark.parametrize("strict", [True, False])
def test_numeric_to_bytes_never_converted(strict: bool) -> None:
    info = make_info({"y": (bytes, (2,))})
    with raises(r"model 'mymodel': output 'y' has dtype int64 \(INT64\); expected \S+ \(BYTES\)"):
        check(info, [req()], [{"y": np.ones((3, 2), np.int64)}], strict=strict)


def test_bytes_kinds_are_interchangeable() -> None:
    info = make_info({"y": (bytes, (2,))})
    y = np.array([["a", "b"]] * 3)  # unicode array: still BYTES on the wire
    out = check(info, [req()], [{"y": y}], strict=True)
    assert out[0]["y"] is y


def test_unsupported_dtype_names_output() -> None:
    with raises(r"output 'y': dtype complex128 has no Triton equivalent"):
        check(make_info(), [req()], [{"y": np.ones((3, 2), np.complex128)}], strict=False)


def test_unsupported_dtype_error_names_model() -> None:
    with raises(r"model 'mymodel'.*output 'y'"):
        check(make_info(), [req()], [{"y": np.ones((3, 2), np.complex128)}], strict=False)


def test_torch_output_converted() -> None:
    torch = pytest.importorskip("torch")
    out = check(make_info(), [req()], [{"y": torch.ones(3, 2)}])
    assert isinstance(out[0]["y"], np.ndarray)
    assert out[0]["y"].dtype == np.float32


def test_request_batch_size() -> None:
    assert request_batch_size(req(5)) == 5
    assert request_batch_size(Request({"s": np.array(1.0)})) == 1
    assert request_batch_size(Request({})) == 1


# -- bfloat16 outputs ------------------------------------------------------------------------

def _bf16() -> Any:
    import ml_dtypes

    return ml_dtypes.bfloat16


def test_bf16_output_accepts_bf16_arrays_and_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    info = make_info({"y": ("BF16", (2,))})
    ok = check(info, [req(1)], [{"y": np.ones((1, 2), dtype=_bf16())}])
    assert ok[0]["y"].dtype == np.dtype(_bf16())
    from_torch = check(info, [req(1)], [{"y": torch.ones(1, 2, dtype=torch.bfloat16)}])
    assert from_torch[0]["y"].dtype == np.dtype(_bf16())


def test_bf16_output_rounds_floats_only_when_lenient() -> None:
    info = make_info({"y": ("BF16", (2,))})
    lenient = check(info, [req(1)], [{"y": np.array([[1.0, 3.14159]], dtype=np.float32)}], strict=False)
    assert lenient[0]["y"].dtype == np.dtype(_bf16())
    assert lenient[0]["y"].astype(np.float32).tolist() == [[1.0, 3.140625]]
    with raises(r"output 'y' has dtype float32 \(FP32\); expected bfloat16 \(BF16\)"):
        check(info, [req(1)], [{"y": np.ones((1, 2), dtype=np.float32)}], strict=True)
    with raises(r"output 'y' has dtype object \(BYTES\); expected bfloat16"):
        check(info, [req(1)], [{"y": np.array([[b"a", b"b"]], dtype=object)}], strict=False)


def test_bf16_array_for_an_fp32_output_is_widened_when_lenient() -> None:
    info = make_info({"y": (np.float32, (2,))})
    out = check(info, [req(1)], [{"y": np.array([[1.5, 2.0]], dtype=_bf16())}], strict=False)
    assert out[0]["y"].dtype == np.float32 and out[0]["y"].tolist() == [[1.5, 2.0]]
