"""Streaming (decoupled) models on a real server: cancellation, concurrency, limit, batching.

The infer functions run in this process (the worker side of the channel), so they record what
happened to them (a GeneratorExit, the cancellation flag, how many streams ran at once) in
module state that the tests read.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from pytriton_torch import DynamicBatcher, ModelConfig, Request, Tensor, Triton
from tests.integration.conftest import make_config

STREAM_IO = ([Tensor(name="n", dtype=np.int32, shape=(1,))], [Tensor(name="y", dtype=np.int32, shape=(1,))])
TOKEN_S = 0.2  # time per token of the slow generators
PACED_S = 0.5  # time per token in the concurrency test


class Record:
    """What one infer function saw: tokens yielded, whether it was closed or saw the flag."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.yielded = 0
        self.closed = threading.Event()
        self.flagged = threading.Event()
        self.active = 0
        self.most_active = 0
        self.batch_sizes: list[int] = []

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def enter(self, batch: int) -> None:
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            self.batch_sizes.append(batch)

    def leave(self) -> None:
        with self.lock:
            self.active -= 1


SYNC, ASYNC, PLAIN, LIMITED, BATCHED = Record(), Record(), Record(), Record(), Record()


def _tokens(requests: list[Request], i: int) -> list[dict[str, Any]]:
    return [{"y": np.full((1, 1), i, dtype=np.int32)} for _ in requests]


def _count(requests: list[Request]) -> int:
    return int(requests[0]["n"].reshape(-1)[0])


def _slow(requests: list[Request]) -> Iterator[list[dict[str, Any]]]:
    try:
        for i in range(_count(requests)):
            time.sleep(TOKEN_S)
            SYNC.yielded += 1
            yield _tokens(requests, i)
    except GeneratorExit:
        SYNC.closed.set()
        raise


async def _aslow(requests: list[Request]) -> AsyncIterator[list[dict[str, Any]]]:
    try:
        for i in range(_count(requests)):
            await asyncio.sleep(TOKEN_S)
            ASYNC.yielded += 1
            yield _tokens(requests, i)
    except GeneratorExit:
        ASYNC.closed.set()
        raise


def _plain(requests: list[Request]) -> list[dict[str, Any]]:
    """Answers once, after working for up to 20 s unless its stream is cancelled."""
    end = time.monotonic() + 20
    while time.monotonic() < end:
        if requests[0].is_cancelled():
            PLAIN.flagged.set()
            break
        time.sleep(0.02)
    return _tokens(requests, 7)


def _paced(requests: list[Request]) -> Iterator[list[dict[str, Any]]]:
    for i in range(_count(requests)):
        time.sleep(PACED_S)
        yield _tokens(requests, i)


def _limited(requests: list[Request]) -> Iterator[list[dict[str, Any]]]:
    LIMITED.enter(len(requests))
    try:
        for i in range(_count(requests)):
            time.sleep(TOKEN_S)
            yield _tokens(requests, i)
    finally:
        LIMITED.leave()


def _batched(requests: list[Request]) -> Iterator[list[dict[str, Any]]]:
    BATCHED.enter(len(requests))
    for i in range(3):
        yield [{"y": np.full((1, 1), 100 * int(r["n"].reshape(-1)[0]) + i, dtype=np.int32)} for r in requests]


@pytest.fixture(scope="module", params=["unix", "zmq"])
def server(request: pytest.FixtureRequest) -> Iterator[Triton]:
    """Streams are multiplexed on the channel: checked on both transports."""
    with Triton(config=make_config(), channel=request.param) as triton:
        one = ModelConfig(max_batch_size=1, decoupled=True)
        triton.bind("slow", _slow, *STREAM_IO, config=one)
        triton.bind("aslow", _aslow, *STREAM_IO, config=one)
        triton.bind("plain", _plain, *STREAM_IO, config=one)
        triton.bind("paced", _paced, *STREAM_IO, config=one)
        triton.bind(
            "limited",
            _limited,
            *STREAM_IO,
            config=ModelConfig(max_batch_size=1, decoupled=True, max_concurrent_streams=2),
        )
        triton.bind(
            "batched",
            _batched,
            *STREAM_IO,
            config=ModelConfig(
                max_batch_size=4, decoupled=True, batcher=DynamicBatcher(max_queue_delay_microseconds=300_000)
            ),
        )
        yield triton


class Stream:
    """One client gRPC stream carrying one request; records the arrival time of each answer."""

    def __init__(self, server: Triton, model: str, n: int) -> None:
        self.answers: queue.Queue[Any] = queue.Queue()
        self.client = grpcclient.InferenceServerClient(server.grpc_url.removeprefix("grpc://"))
        self.client.start_stream(
            callback=lambda result, error: self.answers.put((time.monotonic(), error or result))
        )
        item = grpcclient.InferInput("n", [1, 1], "INT32")
        item.set_data_from_numpy(np.array([[n]], dtype=np.int32))
        self.sent = time.monotonic()
        self.client.async_stream_infer(model, [item], enable_empty_final_response=True)

    def next(self, timeout: float = 30) -> tuple[float, Any]:
        """(seconds since sent, token value, or None for the final answer, or the error text)."""
        at, got = self.answers.get(timeout=timeout)
        if isinstance(got, InferenceServerException):
            return at - self.sent, str(got)
        if got.get_response().parameters["triton_final_response"].bool_param:
            return at - self.sent, None
        return at - self.sent, int(got.as_numpy("y")[0, 0])

    def rest(self) -> list[Any]:
        values = []
        while (value := self.next()[1]) is not None and not isinstance(value, str):
            values.append(value)
        return values

    def cancel(self) -> None:
        self.client.stop_stream(cancel_requests=True)
        self.client.close()

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


@pytest.mark.parametrize(("model", "record"), [("slow", SYNC), ("aslow", ASYNC)])
def test_cancel_after_three_tokens_closes_the_generator(server: Triton, model: str, record: Record) -> None:
    record.reset()
    stream = Stream(server, model, 30)
    assert [stream.next()[1] for _ in range(3)] == [0, 1, 2]
    cancelled = time.monotonic()
    stream.cancel()
    assert record.closed.wait(5), f"the generator ran on after the cancel ({record.yielded} of 30 yielded)"
    assert time.monotonic() - cancelled < 3.0
    assert record.yielded < 15
    # The next stream on the same (single) instance starts at once, not after the 30 tokens.
    after = Stream(server, model, 2)
    try:
        first, value = after.next()
        assert value == 0 and first < 3.0, (first, value)
        assert after.rest() == [1]
    finally:
        after.close()


def test_undecorated_function_sees_the_cancellation(server: Triton) -> None:
    PLAIN.reset()
    stream = Stream(server, "plain", 1)
    time.sleep(0.5)  # the function is working
    stream.cancel()
    assert PLAIN.flagged.wait(5), "Request.is_cancelled() never turned True"


def test_is_cancelled_is_false_for_a_live_stream() -> None:
    assert Request({"n": np.zeros((1, 1), dtype=np.int32)}).is_cancelled() is False


CLIENT = textwrap.dedent(
    """
    import queue, sys
    import numpy as np
    import tritonclient.grpc as grpcclient

    answers = queue.Queue()
    client = grpcclient.InferenceServerClient(sys.argv[1])
    client.start_stream(callback=lambda result, error: answers.put(error or result))
    item = grpcclient.InferInput("n", [1, 1], "INT32")
    item.set_data_from_numpy(np.array([[30]], dtype=np.int32))
    client.async_stream_infer("slow", [item])
    for _ in range(3):
        answers.get(timeout=30)
        print("TOKEN", flush=True)
    sys.stdin.read()  # stays until killed
    """
)


def test_client_killed_mid_stream_closes_the_generator(server: Triton) -> None:
    SYNC.reset()
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, server.grpc_url.removeprefix("grpc://")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None
        for _ in range(3):
            assert client.stdout.readline().strip() == "TOKEN"
        os.kill(client.pid, signal.SIGKILL)
        client.wait(10)
        assert SYNC.closed.wait(5), (
            f"the generator ran on after the client died ({SYNC.yielded} of 30 yielded)"
        )
        assert SYNC.yielded < 15
    finally:
        if client.poll() is None:
            client.kill()


def test_one_instance_serves_concurrent_streams(server: Triton) -> None:
    streams = [Stream(server, "paced", 6) for _ in range(4)]
    try:
        firsts = [stream.next() for stream in streams]
        assert [value for _, value in firsts] == [0, 0, 0, 0]
        # One stream at a time (6 tokens of 0.5 s each), they arrived at 0.5, 3.5, 6.5 and 9.5 s.
        assert max(at for at, _ in firsts) < 2.5, firsts
        assert all(stream.rest() == [1, 2, 3, 4, 5] for stream in streams)
    finally:
        for stream in streams:
            stream.close()


def test_max_concurrent_streams_makes_later_streams_wait(server: Triton) -> None:
    LIMITED.reset()
    streams = [Stream(server, "limited", 4) for _ in range(5)]
    try:
        assert all(stream.rest() == [0, 1, 2, 3] for stream in streams)
    finally:
        for stream in streams:
            stream.close()
    assert LIMITED.most_active == 2, LIMITED.most_active
    assert len(LIMITED.batch_sizes) == 5


def test_dynamic_batcher_still_groups_new_streams(server: Triton) -> None:
    BATCHED.reset()
    streams = [Stream(server, "batched", k) for k in range(1, 5)]
    try:
        for k, stream in enumerate(streams, start=1):
            assert stream.rest() == [100 * k, 100 * k + 1, 100 * k + 2]
    finally:
        for stream in streams:
            stream.close()
    assert max(BATCHED.batch_sizes) > 1, BATCHED.batch_sizes
