"""Large tensors over a real tritonserver: shared memory given back after a one-off large request,
and BYTES tensors of millions of elements at a cost close to a numeric body of the same size."""

from __future__ import annotations

import gc
import os
import pathlib
import re
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import psutil
import pytest
import tritonclient.http as httpclient

from pytriton_torch import ModelConfig, Request, Tensor, Triton
from tests.integration.conftest import children, make_config

SHRINK_AFTER = 8  # documented: messages in a row that fit a smaller segment before it is replaced
LARGE = 256 << 20
STEADY = 8 << 20
SMALL = 200_000  # over the 64 KiB inline limit: travels in shared memory
MIB = 1 << 20


def _sized(requests: list[Request]) -> list[dict[str, Any]]:
    """An output of ``n`` bytes."""
    return [{"y": np.full(int(r["n"].reshape(-1)[0]), 7, dtype=np.uint8)} for r in requests]


def _total(requests: list[Request]) -> list[dict[str, Any]]:
    return [{"sum": np.array([int(r["x"].sum(dtype=np.int64))], dtype=np.int64)} for r in requests]


def _echo(requests: list[Request]) -> list[dict[str, Any]]:
    return [{"out": r["text"]} for r in requests]


@pytest.fixture(scope="module")
def triton() -> Iterator[Triton]:
    with Triton(config=make_config()) as server:
        server.bind(
            "grow_out",
            _sized,
            [Tensor(name="n", dtype=np.int64, shape=(1,))],
            [Tensor(name="y", dtype=np.uint8, shape=(-1,))],
            config=ModelConfig(batching=False),
        )
        server.bind(
            "grow_in",
            _total,
            [Tensor(name="x", dtype=np.uint8, shape=(-1,))],
            [Tensor(name="sum", dtype=np.int64, shape=(1,))],
            config=ModelConfig(batching=False),
        )
        server.bind(
            "many_bytes",
            _echo,
            [Tensor(name="text", dtype=bytes, shape=(-1,))],
            [Tensor(name="out", dtype=bytes, shape=(-1,))],
            config=ModelConfig(batching=False, max_input_bytes=64 * MIB),  # sizes BYTES inputs too
        )
        yield server


@pytest.fixture(scope="module")
def client(triton: Triton) -> Iterator[httpclient.InferenceServerClient]:
    url = triton.http_url.removeprefix("http://")
    with httpclient.InferenceServerClient(url, connection_timeout=300, network_timeout=300) as client:
        yield client


def _segments(model: str) -> dict[str, os.stat_result]:
    """This process's channel segments of ``model`` (its own, not the Python backend's regions)."""
    return {p.name: p.stat() for p in pathlib.Path("/dev/shm").glob(f"ptt-{os.getpid()}-*-{model}-*")}


def _held(model: str) -> int:
    return sum(s.st_blocks * 512 for s in _segments(model).values())


def _stub(model: str) -> psutil.Process:
    stubs = [
        p for p in children() if "triton_python_backend_stub" in p.name() and model in " ".join(p.cmdline())
    ]
    assert len(stubs) == 1, stubs
    return stubs[0]


def _deleted_mappings(pid: int, model: str) -> list[str]:
    """Segments of ``model`` that ``pid`` still maps after they were unlinked."""
    with open(f"/proc/{pid}/maps") as maps:
        return [
            line.split()[-2] for line in maps if f"-{model}-" in line and line.rstrip().endswith("(deleted)")
        ]


def _infer_out(client: httpclient.InferenceServerClient, n: int) -> None:
    inp = httpclient.InferInput("n", [1], "INT64")
    inp.set_data_from_numpy(np.array([n], dtype=np.int64))
    result = client.infer("grow_out", [inp], outputs=[httpclient.InferRequestedOutput("y", binary_data=True)])
    y = result.as_numpy("y")
    assert y is not None
    assert y.shape == (n,)
    assert y[0] == 7 and y[-1] == 7


def _infer_in(client: httpclient.InferenceServerClient, n: int) -> None:
    inp = httpclient.InferInput("x", [n], "UINT8")
    inp.set_data_from_numpy(np.ones(n, dtype=np.uint8))
    result = client.infer("grow_in", [inp])
    assert result.as_numpy("sum").tolist() == [n]  # type: ignore[union-attr]


def _shm_gauge(triton: Triton, model: str) -> float:
    page = urllib.request.urlopen(triton.metrics_url, timeout=30).read().decode()
    series = re.findall(
        rf'^pytriton_torch_channel_shm_bytes\{{[^}}]*model="{model}"[^}}]*\}} (\S+)$', page, re.M
    )
    assert series, f"no shm gauge for {model}"
    return sum(float(v) for v in series)


def test_output_segment_is_given_back_after_one_large_response(
    triton: Triton, client: httpclient.InferenceServerClient
) -> None:
    for _ in range(SHRINK_AFTER + 2):  # a steady size keeps one segment
        _infer_out(client, STEADY)
    steady = _segments("grow_out")
    assert len(steady) == 1 and 0 < _held("grow_out") <= 2 * STEADY, steady

    _infer_out(client, LARGE)
    assert _held("grow_out") >= LARGE
    for _ in range(SHRINK_AFTER):
        _infer_out(client, SMALL)
    held = _held("grow_out")
    print(
        f"\nresponse segments: {held / MIB:.1f} MiB after one {LARGE // MIB} MiB response and {SHRINK_AFTER} small ones"
    )
    assert held <= 2 * MIB
    assert _deleted_mappings(_stub("grow_out").pid, "grow_out") == [], "the stub still maps the large segment"

    time.sleep(1.2)  # the proxy pushes its gauge at most once a second
    _infer_out(client, SMALL)
    assert _shm_gauge(triton, "grow_out") <= 2 * MIB

    for _ in range(SHRINK_AFTER + 2):
        _infer_out(client, STEADY)
    first = _segments("grow_out")
    for _ in range(SHRINK_AFTER + 2):  # steady again: no new segment per request
        _infer_out(client, STEADY)
    again = _segments("grow_out")
    assert len(again) == 1
    assert {(n, s.st_ino) for n, s in again.items()} == {(n, s.st_ino) for n, s in first.items()}


def test_request_segment_is_given_back_after_one_large_request(
    client: httpclient.InferenceServerClient,
) -> None:
    _infer_in(client, LARGE)
    assert _held("grow_in") >= LARGE
    for _ in range(SHRINK_AFTER):
        _infer_in(client, SMALL)
    held = _held("grow_in")
    print(
        f"\nrequest segments: {held / MIB:.1f} MiB after one {LARGE // MIB} MiB request and {SHRINK_AFTER} small ones"
    )
    assert held <= 2 * MIB
    gc.collect()
    assert _deleted_mappings(os.getpid(), "grow_in") == [], "the serving process still maps the large segment"


def _peak_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def _reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")  # the peak RSS starts again from the current RSS


def test_five_million_empty_bytes_elements(client: httpclient.InferenceServerClient) -> None:
    count = 5_000_000
    inp = httpclient.InferInput("text", [count], "BYTES")
    inp.set_data_from_numpy(np.full(count, b"", dtype=np.object_), binary_data=True)  # 19 MiB body
    wanted = [httpclient.InferRequestedOutput("out", binary_data=True)]
    warm = httpclient.InferInput("text", [1], "BYTES")
    warm.set_data_from_numpy(np.array([b""], dtype=np.object_))
    client.infer("many_bytes", [warm], outputs=wanted)
    stub = _stub("many_bytes")
    gc.collect()
    base = {pid: psutil.Process(pid).memory_info().rss / MIB for pid in (os.getpid(), stub.pid)}
    for pid in base:
        _reset_peak(pid)
    started = time.perf_counter()
    result = client.infer("many_bytes", [inp], outputs=wanted)
    elapsed = time.perf_counter() - started
    grown = {pid: _peak_mib(pid) - rss for pid, rss in base.items()}
    print(
        f"\n{count} empty BYTES elements: {elapsed:.2f} s round trip; peak RSS growth: "
        f"serving process {grown[os.getpid()]:.0f} MiB, stub {grown[stub.pid]:.0f} MiB"
    )
    out = result.as_numpy("out")
    assert out is not None
    assert out.shape == (count,)
    assert (out == b"").all()
    assert elapsed < 30
    # Before the vectorised codec: about 1,150 MiB each (a Python object or more per element).
    assert grown[os.getpid()] < 600
    assert grown[stub.pid] < 600
