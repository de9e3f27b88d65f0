"""Cost of the channel metrics on the request path: micro (per batch) and end to end (metrics on vs off).

    /work/venv/bin/python benchmarks/bench_metrics.py            # ~1 minute
    /work/venv/bin/python benchmarks/bench_metrics.py --rounds 6 --requests 400

1. micro: ``ChannelMetrics.record`` per batch, with a pb_utils stand-in whose pushes cost 35 µs
   (what one Python-backend metric update costs: a round trip to the tritonserver process).
2. end to end: two servers (the add_sub example) started with ``PYTRITON_TORCH_METRICS_INTERVAL_S``
   1 (default) and 0 (off); sequential gRPC requests, rounds interleaved between the two so that
   outside load hits both alike; p50/p90 latency per setup.

Prints a table and writes benchmarks/results/metrics_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytriton_torch._channel._metrics import ChannelMetrics  # noqa: E402

PUSH_COST_S = 35e-6


class _Metric:
    def increment(self, value: float) -> None:
        time.sleep(PUSH_COST_S)

    def set(self, value: float) -> None:
        time.sleep(PUSH_COST_S)


class _Family:
    COUNTER = GAUGE = "kind"

    def __init__(self, **kwargs: object) -> None:
        pass

    def Metric(self, labels: dict[str, str]) -> _Metric:  # pb_utils spells it this way
        return _Metric()


class _PbUtils:
    MetricFamily = _Family


def micro(batches: int) -> dict[str, float]:
    os.environ["PYTRITON_TORCH_METRICS_INTERVAL_S"] = "1"
    metrics = ChannelMetrics.create(_PbUtils, "m", "m_0_0")
    assert metrics is not None
    start = time.perf_counter()
    for _ in range(batches):
        begin = time.perf_counter_ns()
        metrics.record(4, time.perf_counter_ns() - begin + 50_000, 30_000, lambda: 1 << 20)
    elapsed = time.perf_counter() - start
    return {"batches": batches, "seconds": elapsed, "us_per_batch": elapsed / batches * 1e6}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(interval: str) -> tuple[subprocess.Popen[bytes], int, int]:
    http, grpc, metrics = _free_port(), _free_port(), _free_port()
    env = {
        **os.environ,
        "PYTRITON_TORCH_METRICS_INTERVAL_S": interval,
        "PYTRITON_TRITON_CONFIG_HTTP_PORT": str(http),
        "PYTRITON_TRITON_CONFIG_GRPC_PORT": str(grpc),
        "PYTRITON_TRITON_CONFIG_METRICS_PORT": str(metrics),
    }
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "add_sub_python" / "server.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/AddSub/ready", timeout=1):
                return server, grpc, metrics
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("server did not become ready")


def end_to_end(rounds: int, requests: int, setups: dict[str, str]) -> dict[str, dict[str, float]]:
    import tritonclient.grpc as grpcclient

    servers = {name: _start(interval) for name, interval in setups.items()}
    latencies: dict[str, list[float]] = {name: [] for name in setups}
    try:
        clients = {
            name: grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
            for name, (_, grpc, _) in servers.items()
        }
        a = np.ones((1, 16), dtype=np.float32)
        inputs = [grpcclient.InferInput("a", [1, 16], "FP32"), grpcclient.InferInput("b", [1, 16], "FP32")]
        for item in inputs:
            item.set_data_from_numpy(a)
        for client in clients.values():  # warm-up
            for _ in range(50):
                client.infer("AddSub", inputs)
        order = list(clients)
        for _ in range(rounds):
            order.reverse()  # alternate which setup goes first
            for name in order:
                client = clients[name]
                for _ in range(requests):
                    begin = time.perf_counter()
                    client.infer("AddSub", inputs)
                    latencies[name].append((time.perf_counter() - begin) * 1e3)
        for client in clients.values():
            client.close()
    finally:
        for server, _, _ in servers.values():
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    result = {}
    for name, values in latencies.items():
        values.sort()
        result[name] = {
            "requests": len(values),
            "p50_ms": statistics.median(values),
            "p90_ms": values[int(len(values) * 0.9)],
            "mean_ms": statistics.fmean(values),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=200_000, help="batches for the micro benchmark")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds per setup")
    parser.add_argument("--requests", type=int, default=300, help="requests per round")
    parser.add_argument("--control", action="store_true", help="A/A run: metrics on in both servers")
    parser.add_argument(
        "--out", type=pathlib.Path, default=ROOT / "benchmarks" / "results" / "metrics_overhead.json"
    )
    args = parser.parse_args()

    small = micro(args.batches)
    # --control: both servers alike (A/A), to see how much two identical setups differ on this machine
    setups = (
        {"metrics_on": "1", "metrics_off": "1"} if args.control else {"metrics_on": "1", "metrics_off": "0"}
    )
    e2e = end_to_end(args.rounds, args.requests, setups)
    print("| measurement | value |")
    print("|---|---:|")
    print(
        f"| ChannelMetrics.record per batch (pushes at 35 µs each, once a second) | {small['us_per_batch']:.3f} µs |"
    )
    for name, numbers in e2e.items():
        print(
            f"| {name}: p50 / p90 / mean latency, sequential gRPC | {numbers['p50_ms']:.3f} / {numbers['p90_ms']:.3f} / {numbers['mean_ms']:.3f} ms |"
        )
    delta = e2e["metrics_on"]["p50_ms"] - e2e["metrics_off"]["p50_ms"]
    print(f"| p50 difference (on - off) | {delta * 1e3:+.1f} µs |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"micro": small, "end_to_end": e2e, "control": args.control, "date": time.strftime("%Y-%m-%d")},
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
