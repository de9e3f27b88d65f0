"""Warm-up samples run in this process (pytriton_torch/_warmup.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest

from pytriton_torch._channel._worker import EventLoopThread
from pytriton_torch._context import ModelInfo
from pytriton_torch._types import Request
from pytriton_torch._warmup import decode_file, run_warmups
from pytriton_torch.exceptions import PyTritonTorchModelError, PyTritonTorchValidationError
from pytriton_torch.model_config import ModelWarmup, Tensor, WarmupInput

IN = (Tensor(name="x", dtype=np.int32, shape=(-1,)), Tensor(name="s", dtype=bytes, shape=(1,)))
OUT = (Tensor(name="y", dtype=np.int32, shape=(-1,)),)


def _info(max_batch_size: int = 8, decoupled: bool = False) -> ModelInfo:
    return ModelInfo(
        "m", IN, OUT, batching=max_batch_size > 0, max_batch_size=max_batch_size, decoupled=decoupled
    )


def _sample(batch_size: int = 3, count: int = 2, **x: Any) -> ModelWarmup:
    return ModelWarmup(
        name="w",
        batch_size=batch_size,
        count=count,
        inputs={"x": WarmupInput(dtype=np.int32, shape=(5,), **x), "s": WarmupInput(dtype=bytes, shape=(1,))},
    )


@pytest.fixture
def loop() -> Iterator[EventLoopThread]:
    loop = EventLoopThread()
    yield loop
    loop.stop()


def test_each_instance_gets_batch_size_requests_count_times(loop: EventLoopThread) -> None:
    calls: list[list[Request]] = []

    def first(requests: list[Request]) -> list[dict[str, np.ndarray]]:
        calls.append(requests)
        return [{"y": r["x"]} for r in requests]

    def second(requests: list[Request]) -> list[dict[str, np.ndarray]]:
        calls.append(requests)
        return [{"y": r["x"]} for r in requests]

    run_warmups(_info(), [first, second], [_sample()], loop, strict=True)
    assert len(calls) == 4 and all(len(requests) == 3 for requests in calls)
    request = calls[0][0]
    assert request["x"].shape == (1, 5) and request["x"].dtype == np.int32 and not request["x"].any()
    assert request["s"].dtype == np.object_ and request["s"].tolist() == [[b""]]


def test_random_data_and_unbatched_shapes(loop: EventLoopThread) -> None:
    seen: list[np.ndarray] = []

    def fn(requests: list[Request]) -> list[dict[str, np.ndarray]]:
        seen.append(requests[0]["x"])
        return [{"y": r["x"]} for r in requests]

    run_warmups(
        _info(max_batch_size=0), [fn], [_sample(batch_size=1, count=1, random_data=True)], loop, strict=False
    )
    assert seen[0].shape == (5,) and seen[0].dtype == np.int32


def test_a_failing_sample_names_the_model_sample_and_error(loop: EventLoopThread) -> None:
    def fn(requests: list[Request]) -> list[dict[str, np.ndarray]]:
        raise RuntimeError("cold")

    with pytest.raises(
        PyTritonTorchModelError,
        match="model 'm' failed to load: warm-up sample 'w' failed: RuntimeError: cold",
    ):
        run_warmups(_info(), [fn], [_sample()], loop, strict=False)


def test_outputs_are_checked_as_for_a_served_batch(loop: EventLoopThread) -> None:
    def fn(requests: list[Request]) -> list[dict[str, np.ndarray]]:
        return [{"wrong": r["x"]} for r in requests]

    with pytest.raises(PyTritonTorchModelError, match="warm-up sample 'w' failed"):
        run_warmups(_info(), [fn], [_sample()], loop, strict=False)


def test_async_and_streaming_functions(loop: EventLoopThread) -> None:
    async def coroutine(requests: list[Request]) -> list[dict[str, np.ndarray]]:
        return [{"y": r["x"]} for r in requests]

    run_warmups(_info(), [coroutine], [_sample()], loop, strict=False)

    async def stream(requests: list[Request]) -> AsyncIterator[list[dict[str, np.ndarray]]]:
        yield [{"y": r["x"]} for r in requests]
        raise RuntimeError("second chunk")

    with pytest.raises(PyTritonTorchModelError, match="second chunk"):
        run_warmups(_info(decoupled=True), [stream], [_sample()], loop, strict=False)


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        (
            ModelWarmup(name="w", batch_size=1, inputs={"z": WarmupInput(dtype=np.int32, shape=(1,))}),
            "unknown input",
        ),
        (_sample(batch_size=9), "batch_size=9; expected 1..8"),
        (_sample(input_data_file="/nonexistent/raw.npy"), "input_data_file '/nonexistent/raw.npy': cannot read"),
        (
            ModelWarmup(name="w", batch_size=1, inputs={"x": WarmupInput(dtype=np.int32, shape=(1,))}),
            "lacks the input",
        ),
        (
            ModelWarmup(
                name="w",
                batch_size=1,
                inputs={
                    "x": WarmupInput(dtype=np.float32, shape=(1,)),
                    "s": WarmupInput(dtype=bytes, shape=(1,)),
                },
            ),
            "has dtype FP32; the model declares INT32",
        ),
        (
            ModelWarmup(
                name="w",
                batch_size=1,
                inputs={
                    "x": WarmupInput(dtype=np.int32, shape=(1, 2)),
                    "s": WarmupInput(dtype=bytes, shape=(1,)),
                },
            ),
            r"has shape \(1, 2\)",
        ),
        (
            ModelWarmup(
                name="w",
                batch_size=1,
                inputs={
                    "x": WarmupInput(dtype=np.int32, shape=(-1,)),
                    "s": WarmupInput(dtype=bytes, shape=(1,)),
                },
            ),
            "-1 dims",
        ),
    ],
)
def test_bad_samples_are_refused(loop: EventLoopThread, sample: ModelWarmup, message: str) -> None:
    with pytest.raises(PyTritonTorchValidationError, match=message):
        run_warmups(_info(), [lambda requests: []], [sample], loop, strict=False)


# -- input_data_file (repository models read it from their folder's warmup/) ---------------------


def test_input_data_file_values_are_fed_and_each_file_is_read_once(loop: EventLoopThread) -> None:
    seen: list[Request] = []
    reads: list[str] = []
    files = {
        "x.bin": np.arange(5, dtype=np.int32).tobytes() + b"longer files are fine",
        "s.bin": b"\x02\x00\x00\x00hi",
    }

    def read(name: str) -> bytes:
        reads.append(name)
        return files[name]

    def fn(requests: list[Request]) -> list[dict[str, np.ndarray]]:
        seen.extend(requests)
        return [{"y": r["x"]} for r in requests]

    sample = ModelWarmup(
        name="w",
        batch_size=2,
        count=2,
        inputs={
            "x": WarmupInput(dtype=np.int32, shape=(5,), input_data_file="x.bin"),
            "s": WarmupInput(dtype=bytes, shape=(1,), input_data_file="s.bin"),
        },
    )
    run_warmups(_info(), [fn, fn], [sample], loop, strict=True, read_file=read)
    assert len(seen) == 8 and sorted(reads) == ["s.bin", "x.bin"]
    for request in seen:
        assert request["x"].tolist() == [[0, 1, 2, 3, 4]] and request["x"].flags.writeable
        assert request["s"].tolist() == [[b"hi"]]


def test_a_file_that_cannot_be_read_names_the_sample_and_input(loop: EventLoopThread) -> None:
    def read(name: str) -> bytes:
        raise PyTritonTorchModelError(f"no file /models/m/warmup/{name}")

    with pytest.raises(
        PyTritonTorchModelError,
        match=r"model 'm': warm-up sample 'w' input 'x': input_data_file 'raw': no file /models/m/warmup/raw",
    ):
        run_warmups(
            _info(), [lambda r: []], [_sample(input_data_file="raw")], loop, strict=False, read_file=read
        )


@pytest.mark.parametrize(
    ("dtype", "shape", "data", "expected"),
    [
        (np.float32, (1, 2), np.array([1.5, -2], np.float32).tobytes(), [[1.5, -2.0]]),
        (np.int64, (2,), np.array([7, 8, 9], np.int64).tobytes(), [7, 8]),  # the leading bytes
        (np.bool_, (3,), b"\x01\x00\x01", [True, False, True]),
        (np.object_, (2,), b"\x03\x00\x00\x00abc\x00\x00\x00\x00", [b"abc", b""]),
        (np.object_, (1, 1), b"\x01\x00\x00\x00\xff", [[b"\xff"]]),
    ],
)
def test_decode_file_reads_triton_layouts(
    dtype: Any, shape: tuple[int, ...], data: bytes, expected: list[Any]
) -> None:
    array = decode_file(data, np.dtype(dtype), shape, "here")
    assert array.shape == shape and array.dtype == np.dtype(dtype) and array.tolist() == expected


@pytest.mark.parametrize(
    ("dtype", "shape", "data", "message"),
    [
        (
            np.float32,
            (4,),
            b"\x00" * 15,
            r"here: expected at least 16 bytes \(4 FP32 element\(s\)\), the file has 15",
        ),
        (np.object_, (2,), b"\x01\x00\x00\x00a", r"expected 2 BYTES element\(s\).*ends after 1"),
        (np.object_, (1,), b"\x09\x00\x00\x00abc", "element 0 declares 9 bytes but only 3 remain"),
        (np.object_, (1,), b"\x01\x00", r"ends after 0"),
    ],
)
def test_decode_file_refuses_short_or_malformed_data(
    dtype: Any, shape: tuple[int, ...], data: bytes, message: str
) -> None:
    with pytest.raises(PyTritonTorchValidationError, match=message):
        decode_file(data, np.dtype(dtype), shape, "here")


# -- input_data_file of bound models: .npy files, as PyTriton ------------------------------------


def _npy_sample(path: str, batch_size: int = 3) -> ModelWarmup:
    return ModelWarmup(
        name="w",
        batch_size=batch_size,
        count=1,
        inputs={
            "x": WarmupInput(dtype=np.int32, shape=(5,), input_data_file=path),
            "s": WarmupInput(dtype=bytes, shape=(1,), input_data_file=path.replace("x", "s")),
        },
    )


def _recorded(loop: EventLoopThread, info: ModelInfo, sample: ModelWarmup) -> list[Request]:
    calls: list[list[Request]] = []

    def fn(requests: list[Request]) -> list[dict[str, np.ndarray]]:
        calls.append(requests)
        return [{"y": r["x"]} for r in requests]

    run_warmups(info, [fn], [sample], loop, strict=True)
    return calls[0]


@pytest.mark.parametrize("rows", [None, 2, 4])
def test_npy_file_values_are_fed_row_by_row(loop: EventLoopThread, tmp_path: Any, rows: int | None) -> None:
    x = np.arange(5 * (rows or 1), dtype=np.int64).reshape(-1, 5)  # int64 is cast as PyTriton does
    np.save(tmp_path / "x.npy", x if rows else x[0])
    np.save(tmp_path / "s.npy", np.array([[b"a"], [b"bc"]] if rows else [b"a"], dtype=np.bytes_))
    requests = _recorded(loop, _info(), _npy_sample(str(tmp_path / "x.npy")))
    assert len(requests) == 3
    for index, request in enumerate(requests):
        assert request["x"].dtype == np.int32 and request["x"].shape == (1, 5)
        assert request["x"][0].tolist() == x[index % (rows or 1)].tolist()
        assert request["s"].dtype == np.object_
        assert request["s"].tolist() == [[b"bc" if rows and index % 2 else b"a"]]


def test_npy_file_for_unbatched_model_and_str_arrays(loop: EventLoopThread, tmp_path: Any) -> None:
    np.save(tmp_path / "x.npy", np.full(5, 7, dtype=np.int32))
    np.save(tmp_path / "s.npy", np.array(["é"]))
    requests = _recorded(loop, _info(max_batch_size=0), _npy_sample(str(tmp_path / "x.npy"), batch_size=1))
    assert requests[0]["x"].tolist() == [7] * 5 and requests[0]["s"].tolist() == ["é".encode()]


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((2, 4), dtype=np.int32), r"holds shape \(2, 4\); expected \(5,\) or \(n, 5\)"),
        (np.array([object()] * 5, dtype=object), "without pickled objects"),
    ],
)
def test_bad_npy_files_are_refused(loop: EventLoopThread, tmp_path: Any, x: np.ndarray, message: str) -> None:
    np.save(tmp_path / "x.npy", x, allow_pickle=True)
    np.save(tmp_path / "s.npy", np.array([b"a"]))
    with pytest.raises(PyTritonTorchValidationError, match=rf"warm-up sample 'w' input 'x': input_data_file .*{message}"):
        run_warmups(_info(), [lambda r: []], [_npy_sample(str(tmp_path / "x.npy"))], loop, strict=False)


def test_npy_bytes_input_needs_a_bytes_array(loop: EventLoopThread, tmp_path: Any) -> None:
    np.save(tmp_path / "x.npy", np.zeros(5, dtype=np.int32))
    np.save(tmp_path / "s.npy", np.array([1.0]))
    with pytest.raises(PyTritonTorchValidationError, match=r"input 's'.*a BYTES input needs a bytes"):
        run_warmups(_info(), [lambda r: []], [_npy_sample(str(tmp_path / "x.npy"))], loop, strict=False)
