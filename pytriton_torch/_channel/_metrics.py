"""Channel metrics of one proxy model instance, exported on Triton's own Prometheus page.

Series (labels ``model`` and ``instance``; see docs/observability.md):

- ``pytriton_torch_channel_batches_total``: batches the proxy forwarded to your process;
- ``pytriton_torch_channel_requests_total``: requests in those batches;
- ``pytriton_torch_channel_round_trip_us_total``: microseconds from sending a batch to receiving its
  answer (includes the infer function);
- ``pytriton_torch_channel_hop_us_total``: the round trip minus the time spent in the infer function,
  i.e. what the channel adds (transport both ways, shared-memory copies, decoding, output checks);
- ``pytriton_torch_channel_shm_bytes`` (gauge): bytes of shared-memory segments the instance's
  channel holds (its request segment plus the mapped response segment).

Every update of a Python-backend metric is a round trip to the Triton process (~35 µs; five per
batch would add ~0.17 ms to each), so values are summed here and pushed at most once per ``interval_s``
(``PYTRITON_TORCH_METRICS_INTERVAL_S``, default 1 s; 0 switches them off): the per-batch cost is
a few additions.

Example::

    metrics = ChannelMetrics.create(pb_utils, "model", "model_0_0")
    metrics.record(requests=4, round_trip_ns=52_000, function_ns=30_000, shm_bytes=lambda: 1 << 20)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

PREFIX = "pytriton_torch_channel_"
_COUNTERS = {
    "batches_total": "Batches forwarded by the proxy to the serving process",
    "requests_total": "Requests in the forwarded batches",
    "round_trip_us_total": "Microseconds from sending a batch to receiving its answer, infer function included",
    "hop_us_total": "Microseconds the channel adds: round trip minus the time in the infer function",
}
_GAUGE = ("shm_bytes", "Bytes of shared-memory segments held by this instance's channel")


class ChannelMetrics:
    """Per-instance accumulators, flushed to Triton's metric families now and then."""

    def __init__(
        self,
        counters: dict[str, Any],
        gauge: Any,
        families: list[Any],
        interval_s: float,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._counters = counters
        self._gauge = gauge
        self._families = families  # must outlive the metrics created from them
        self._interval_ns = int(interval_s * 1e9)
        self._clock = clock
        # None until the first push: the clock's value itself means nothing (time since boot).
        self._last_flush: int | None = None
        self._batches = 0
        self._requests = 0
        self._round_trip_ns = 0
        self._hop_ns = 0
        self._flushed_us = {"round_trip_us_total": 0, "hop_us_total": 0}

    @classmethod
    def create(
        cls, pb_utils: Any, model: str, instance: str, clock: Callable[[], int] = time.monotonic_ns
    ) -> ChannelMetrics | None:
        """Metrics for one instance, or None when Triton's metrics are unavailable (e.g. disabled).

        ``clock`` (nanoseconds, any origin) measures the push interval.
        """
        try:
            interval_s = float(os.environ.get("PYTRITON_TORCH_METRICS_INTERVAL_S", "1.0"))
            if interval_s <= 0:
                return None  # channel metrics switched off
            labels = {"model": model, "instance": instance}
            families, counters = [], {}
            for name, description in _COUNTERS.items():
                family = pb_utils.MetricFamily(
                    name=PREFIX + name, description=description, kind=pb_utils.MetricFamily.COUNTER
                )
                families.append(family)
                counters[name] = family.Metric(labels=labels)
            gauge_family = pb_utils.MetricFamily(
                name=PREFIX + _GAUGE[0], description=_GAUGE[1], kind=pb_utils.MetricFamily.GAUGE
            )
            families.append(gauge_family)
            return cls(counters, gauge_family.Metric(labels=labels), families, interval_s, clock)
        except Exception:  # metrics must never stop a model from loading
            return None

    def record(
        self, requests: int, round_trip_ns: int, function_ns: int, shm_bytes: Callable[[], int]
    ) -> None:
        """Account one batch; pushes the sums to Triton when ``interval_s`` has passed since the last push."""
        self._batches += 1
        self._requests += requests
        self._round_trip_ns += round_trip_ns
        self._hop_ns += max(0, round_trip_ns - function_ns)
        now = self._clock()
        if self._last_flush is None or now - self._last_flush >= self._interval_ns:
            self._last_flush = now
            self.flush(shm_bytes())

    def flush(self, shm_bytes: int) -> None:
        """Push what accumulated since the last push (a few round trips to the Triton process)."""
        try:
            if self._batches:
                self._counters["batches_total"].increment(self._batches)
                self._counters["requests_total"].increment(self._requests)
                self._push_us("round_trip_us_total", self._round_trip_ns)
                self._push_us("hop_us_total", self._hop_ns)
                self._batches = self._requests = 0
            self._gauge.set(shm_bytes)
        except Exception:  # the server is shutting down; the next push retries
            pass

    def _push_us(self, name: str, total_ns: int) -> None:
        # Nanosecond totals are kept so that rounding to microseconds does not lose time per batch.
        total_us = total_ns // 1000
        delta = total_us - self._flushed_us[name]
        if delta > 0:
            self._counters[name].increment(delta)
            self._flushed_us[name] = total_us
