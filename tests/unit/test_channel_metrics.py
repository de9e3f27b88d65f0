"""ChannelMetrics: per-batch sums pushed to Triton's metric objects at most once per interval.

The pb_utils stand-in records what would be pushed; the real export is checked against a live
server in tests/integration/test_cli.py.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import pytest

from pytriton_torch._channel._metrics import PREFIX, ChannelMetrics


class Metric:
    def __init__(self) -> None:
        self.value = 0.0
        self.calls = 0

    def increment(self, value: float) -> None:
        self.value += value
        self.calls += 1

    def set(self, value: float) -> None:
        self.value = value
        self.calls += 1


class Family:
    COUNTER, GAUGE = "counter", "gauge"

    def __init__(self, name: str, description: str, kind: str) -> None:
        self.name, self.kind = name, kind
        self.metric = Metric()
        FakePbUtils.families[name] = self

    def Metric(self, labels: dict[str, str]) -> Metric:  # pb_utils spells it this way
        self.labels = labels
        return self.metric


class FakePbUtils:
    MetricFamily = Family
    families: ClassVar[dict[str, Family]] = {}


def value(name: str) -> float:
    return FakePbUtils.families[PREFIX + name].metric.value


@pytest.fixture
def metrics(monkeypatch: pytest.MonkeyPatch) -> ChannelMetrics:
    monkeypatch.setenv("PYTRITON_TORCH_METRICS_INTERVAL_S", "3600")
    FakePbUtils.families = {}
    created = ChannelMetrics.create(FakePbUtils, "m", "m_0_0")
    assert created is not None
    return created


def test_families_and_labels(metrics: ChannelMetrics) -> None:
    kinds = {name.removeprefix(PREFIX): family.kind for name, family in FakePbUtils.families.items()}
    assert kinds == {
        "batches_total": "counter",
        "requests_total": "counter",
        "round_trip_us_total": "counter",
        "hop_us_total": "counter",
        "shm_bytes": "gauge",
    }
    assert all(f.labels == {"model": "m", "instance": "m_0_0"} for f in FakePbUtils.families.values())


def test_first_batch_pushes_then_sums_until_the_interval(metrics: ChannelMetrics) -> None:
    metrics.record(2, round_trip_ns=50_500, function_ns=30_000, shm_bytes=lambda: 4096)
    assert (value("batches_total"), value("requests_total")) == (1, 2)
    assert (value("round_trip_us_total"), value("hop_us_total")) == (50, 20)
    assert value("shm_bytes") == 4096
    calls = sum(f.metric.calls for f in FakePbUtils.families.values())
    for _ in range(100):  # within the interval: nothing is pushed
        metrics.record(1, round_trip_ns=10_000, function_ns=9_000, shm_bytes=lambda: 1)
    assert sum(f.metric.calls for f in FakePbUtils.families.values()) == calls
    metrics.flush(8192)
    assert (value("batches_total"), value("requests_total")) == (101, 102)
    assert value("round_trip_us_total") == 1050  # 50.5 + 100 * 10 µs: sub-µs parts are not lost
    assert value("hop_us_total") == 120  # 20.5 + 100 * 1 µs, rounded down
    assert value("shm_bytes") == 8192


@pytest.mark.parametrize("boot_ns", [0, 1_000_000, 10**9 * 3599])
def test_first_batch_pushes_whatever_the_clock_reads(monkeypatch: pytest.MonkeyPatch, boot_ns: int) -> None:
    """A machine booted moments ago has a small monotonic clock: the first push must not wait."""
    monkeypatch.setenv("PYTRITON_TORCH_METRICS_INTERVAL_S", "3600")
    FakePbUtils.families = {}
    now = [boot_ns]
    metrics = ChannelMetrics.create(FakePbUtils, "m", "m_0_0", clock=lambda: now[0])
    assert metrics is not None
    metrics.record(1, 1_000, 0, lambda: 0)
    assert value("batches_total") == 1
    now[0] += 10**9 * 3599  # within the interval: summed, not pushed
    metrics.record(1, 1_000, 0, lambda: 0)
    assert value("batches_total") == 1
    now[0] += 10**9  # the interval has passed since the first push
    metrics.record(1, 1_000, 0, lambda: 0)
    assert value("batches_total") == 3


def test_hop_is_never_negative(metrics: ChannelMetrics) -> None:
    metrics.record(1, round_trip_ns=1_000, function_ns=5_000, shm_bytes=lambda: 0)
    assert value("hop_us_total") == 0


def test_interval_elapsed_pushes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTRITON_TORCH_METRICS_INTERVAL_S", "0.01")
    FakePbUtils.families = {}
    metrics = ChannelMetrics.create(FakePbUtils, "m", "m_0_0")
    assert metrics is not None
    metrics.record(1, 1_000, 0, lambda: 0)
    metrics.record(1, 1_000, 0, lambda: 0)
    assert value("batches_total") == 1
    time.sleep(0.02)
    metrics.record(1, 1_000, 0, lambda: 0)
    assert value("batches_total") == 3


def test_switched_off_or_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTRITON_TORCH_METRICS_INTERVAL_S", "0")
    assert ChannelMetrics.create(FakePbUtils, "m", "m_0_0") is None

    class Broken:
        class MetricFamily:
            COUNTER = GAUGE = "x"

            def __init__(self, **kwargs: Any) -> None:
                raise RuntimeError("metrics are disabled")

    monkeypatch.setenv("PYTRITON_TORCH_METRICS_INTERVAL_S", "1")
    assert ChannelMetrics.create(Broken, "m", "m_0_0") is None


def test_a_failing_push_is_retried(metrics: ChannelMetrics) -> None:
    counter = FakePbUtils.families[PREFIX + "batches_total"].metric
    original = counter.increment

    def fail(value: float) -> None:
        raise RuntimeError("server shutting down")

    counter.increment = fail  # type: ignore[method-assign]
    metrics.record(3, 1_000, 0, lambda: 0)  # first batch: push attempted, fails, nothing lost
    counter.increment = original  # type: ignore[method-assign]
    metrics.flush(0)
    assert value("batches_total") == 1 and value("requests_total") == 3
