#!/usr/bin/env python3
"""Soak test: many concurrent HTTP and gRPC clients against one server for a long time.

The server (this process) serves ``soak``: ``y = 2 * x`` for a float32 vector of varied length
(64 B .. 4 MB, so tensors travel both inline and through shared memory), two instances, dynamic
batching. Clients run in separate processes (so their memory is not counted as the server's),
half of them over HTTP and half over gRPC, each in a closed loop with a short think time, and
check every answer. Every ``--interval`` seconds the script records completed and failed
requests, the resident memory of this process, of tritonserver and of the stubs, and the bytes
the server holds in ``/dev/shm``.

Pass criteria: zero failed requests; after the warm-up, resident memory and /dev/shm usage flat
(growth reported as MiB per hour from a least-squares fit) and throughput stable (coefficient
of variation over the intervals). Exit status 1 when a request failed.

Usage::

    python benchmarks/soak.py                                # 10 minutes, 32 clients
    python benchmarks/soak.py --duration 30 --clients 32     # the test-suite version
    python benchmarks/soak.py --out benchmarks/results/soak.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import pathlib
import platform
import statistics
import sys
import threading
import time
from typing import Any

import numpy as np
import psutil

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

# Vector lengths (float32) and how often each is sent: mostly small, some through shared memory.
SIZES = (16, 256, 4_096, 16_384, 100_000, 1_000_000)
WEIGHTS = (30, 30, 20, 10, 8, 2)


def _infer_fn(requests: list[Any]) -> list[dict[str, np.ndarray]]:
    return [{"y": r["x"] * 2} for r in requests]


# -- clients (separate processes) --------------------------------------------------------------


def _client_thread(
    protocol: str, url: str, seed: int, stop_at: float, think_s: float, buckets: dict[int, list[int]],
    errors: list[str], lock: threading.Lock, start: float,
) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    rng = np.random.default_rng(seed)
    module: Any = httpclient if protocol == "http" else grpcclient
    client = (
        httpclient.InferenceServerClient(url, connection_timeout=60, network_timeout=60)
        if protocol == "http"
        else grpcclient.InferenceServerClient(url)
    )
    probabilities = np.array(WEIGHTS, dtype=float) / sum(WEIGHTS)
    while time.time() < stop_at:
        n = int(rng.choice(SIZES, p=probabilities))
        x = rng.random((1, n), dtype=np.float32)
        item = module.InferInput("x", [1, n], "FP32")
        item.set_data_from_numpy(x)
        ok = True
        try:
            y = client.infer("soak", [item]).as_numpy("y")
            if y is None or not np.array_equal(y, x * 2):
                ok = False
                message = f"{protocol}: wrong answer for n={n}"
        except Exception as exc:  # every failure is counted and reported, never retried
            ok = False
            message = f"{protocol}: {type(exc).__name__}: {exc}"[:300]
        second = int(time.time() - start)
        with lock:
            bucket = buckets.setdefault(second, [0, 0])
            bucket[0 if ok else 1] += 1
            if not ok and len(errors) < 50:
                errors.append(message)
        if think_s:
            time.sleep(think_s)


def _client_process(
    protocols: list[str], http_url: str, grpc_url: str, seed: int, stop_at: float, think_s: float,
    start: float, out: Any,
) -> None:
    buckets: dict[int, list[int]] = {}
    errors: list[str] = []
    lock = threading.Lock()
    threads = [
        threading.Thread(
            target=_client_thread,
            args=(p, http_url if p == "http" else grpc_url, seed * 1000 + i, stop_at, think_s, buckets,
                  errors, lock, start),
        )
        for i, p in enumerate(protocols)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put({"buckets": buckets, "errors": errors})


# -- server-side sampling ---------------------------------------------------------------------


def _rss_mib(proc: psutil.Process) -> float:
    try:
        return float(proc.memory_info().rss) / 2**20
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return 0.0


def _sample(triton: Any, start: float) -> dict[str, float]:
    me = psutil.Process()
    server = psutil.Process(triton._process.pid)
    stubs = [p for p in server.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
    shm_used = shm_size = 0
    for path in pathlib.Path("/dev/shm").glob(f"{triton._shm_prefix}*"):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        shm_used += st.st_blocks * 512
        shm_size += st.st_size
    return {
        "t": round(time.time() - start, 1),
        "owner_rss_mib": round(_rss_mib(me), 1),
        "tritonserver_rss_mib": round(_rss_mib(server), 1),
        "stubs_rss_mib": round(sum(_rss_mib(p) for p in stubs), 1),
        "shm_used_mib": round(shm_used / 2**20, 2),
        "shm_size_mib": round(shm_size / 2**20, 2),
    }


def _slope_per_hour(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    xs = np.array([p[0] for p in points])
    ys = np.array([p[1] for p in points])
    if float(np.ptp(xs)) == 0:
        return 0.0
    return float(np.polyfit(xs, ys, 1)[0] * 3600)


def _growth(samples: list[dict[str, float]], key: str, warmup: float, duration: float) -> dict[str, float]:
    """Level and trend of one measure after the warm-up, and over the second half of the run.

    Shared-memory segments grow in powers of two up to the largest message (a step, not a
    trend); the second-half figures show whether anything still grows once that has happened.
    """
    steady = [s for s in samples if s["t"] >= warmup] or samples
    half = [s for s in samples if s["t"] >= duration / 2] or steady
    values = [s[key] for s in steady]
    return {
        "after_warmup": steady[0][key],
        "end": steady[-1][key],
        "delta": round(steady[-1][key] - steady[0][key], 2),
        "min": min(values),
        "max": max(values),
        "slope_per_hour": round(_slope_per_hour([(s["t"], s[key]) for s in steady]), 2),
        "second_half_delta": round(half[-1][key] - half[0][key], 2),
        "second_half_slope_per_hour": round(_slope_per_hour([(s["t"], s[key]) for s in half]), 2),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from pytriton_torch import DynamicBatcher, ModelConfig, Tensor, Triton, TritonConfig
    from tests.conftest import free_port

    config = TritonConfig(http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
    warmup = args.warmup if args.warmup is not None else min(60.0, args.duration * 0.2)
    with Triton(config=config, channel=args.channel) as triton:
        triton.bind(
            "soak",
            [_infer_fn] * args.instances,
            [Tensor(name="x", dtype=np.float32, shape=(-1,))],
            [Tensor(name="y", dtype=np.float32, shape=(-1,))],
            config=ModelConfig(max_batch_size=8, batcher=DynamicBatcher(max_queue_delay_microseconds=200)),
        )
        protocols = ["http" if i % 2 == 0 else "grpc" for i in range(args.clients)]
        groups = [protocols[i :: args.processes] for i in range(args.processes)]
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        start = time.time() + 5  # clients need a moment to import
        stop_at = start + args.duration
        procs = [
            ctx.Process(
                target=_client_process,
                args=(group, triton.http_url.removeprefix("http://"), triton.grpc_url.removeprefix("grpc://"),
                      i + 1, stop_at, args.think_ms / 1000, start, out),
                daemon=True,
            )
            for i, group in enumerate(groups)
            if group
        ]
        for proc in procs:
            proc.start()
        samples = []
        while time.time() < start:
            time.sleep(0.1)
        next_sample = start
        while time.time() < stop_at + 0.5:
            samples.append(_sample(triton, start))
            next_sample += args.interval
            time.sleep(max(0.0, min(next_sample, stop_at + 0.5) - time.time()))
        results = [out.get(timeout=args.duration + 120) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
        samples.append(_sample(triton, start))
        prefix = triton._shm_prefix
    leftover = sorted(p.name for p in pathlib.Path("/dev/shm").glob(f"{prefix}*"))

    ok: dict[int, int] = {}
    failed = 0
    errors: list[str] = []
    for result in results:
        for second, (good, bad) in result["buckets"].items():
            ok[int(second)] = ok.get(int(second), 0) + good
            failed += bad
        errors.extend(result["errors"])
    # throughput per interval after the warm-up (whole intervals inside the run only)
    intervals = []
    t = warmup
    while t + args.interval <= args.duration + 1e-9:
        count = sum(v for s, v in ok.items() if t <= s < t + args.interval)
        intervals.append(count / args.interval)
        t += args.interval
    total_ok = sum(ok.values())

    def growth(key: str) -> dict[str, float]:
        return _growth(samples, key, warmup, args.duration)

    mean = statistics.fmean(intervals) if intervals else 0.0
    report = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "warmup_s": warmup,
        "requests_ok": total_ok,
        "requests_failed": failed,
        "errors": errors[:20],
        "throughput_rps": {
            "mean": round(mean, 1),
            "min": round(min(intervals), 1) if intervals else 0.0,
            "max": round(max(intervals), 1) if intervals else 0.0,
            "cv": round(statistics.pstdev(intervals) / mean, 3) if mean else 0.0,
            "per_interval": [round(v, 1) for v in intervals],
        },
        "memory_mib": {
            key: growth(key) for key in ("owner_rss_mib", "tritonserver_rss_mib", "stubs_rss_mib")
        },
        "shm_mib": {key: growth(key) for key in ("shm_used_mib", "shm_size_mib")},
        "shm_left_after_stop": leftover,
        "samples": samples,
    }
    return report


def print_table(report: dict[str, Any]) -> None:
    args = report["args"]
    tp = report["throughput_rps"]
    print(f"\nSoak: {args['duration']:g} s, {args['clients']} clients (HTTP + gRPC), warm-up {report['warmup_s']:g} s")
    print(f"requests: {report['requests_ok']} ok, {report['requests_failed']} failed")
    print(f"throughput (req/s per {args['interval']:g} s interval after warm-up): mean {tp['mean']}, "
          f"min {tp['min']}, max {tp['max']}, CV {tp['cv']}")
    print("\n| measure (MiB) | after warm-up | end | min | max | trend/hour after warm-up "
          "| change in 2nd half | trend/hour in 2nd half |")
    print("|---|---|---|---|---|---|---|---|")
    rows = {**report["memory_mib"], **report["shm_mib"]}
    for key, row in rows.items():
        name = key.replace("_mib", "").replace("_", " ")
        print(f"| {name} | {row['after_warmup']} | {row['end']} | {row['min']} | {row['max']} "
              f"| {row['slope_per_hour']} | {row['second_half_delta']} | {row['second_half_slope_per_hour']} |")
    print(f"\n/dev/shm entries left after stop: {len(report['shm_left_after_stop'])}")
    for error in report["errors"][:5]:
        print("error:", error)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients, half HTTP, half gRPC")
    parser.add_argument("--processes", type=int, default=2, help="client processes (clients spread over them)")
    parser.add_argument("--interval", type=float, default=10.0, help="sampling interval in seconds")
    parser.add_argument("--warmup", type=float, default=None, help="seconds excluded from the flatness figures")
    parser.add_argument("--think-ms", type=float, default=5.0, help="pause of each client between requests")
    parser.add_argument("--instances", type=int, default=2, help="model instances")
    parser.add_argument("--channel", default="unix", choices=["unix", "zmq"])
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "results" / "soak.json")
    parser.add_argument("--summarize", type=pathlib.Path, help="recompute and print the figures of a stored report")
    args = parser.parse_args()
    if args.summarize is not None:
        report = json.loads(args.summarize.read_text())
        run_args = report["args"]
        for group, keys in (("memory_mib", ("owner_rss_mib", "tritonserver_rss_mib", "stubs_rss_mib")),
                            ("shm_mib", ("shm_used_mib", "shm_size_mib"))):
            report[group] = {k: _growth(report["samples"], k, report["warmup_s"], run_args["duration"]) for k in keys}
        args.summarize.write_text(json.dumps(report, indent=2))
        print_table(report)
        return 0
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"\nwritten to {args.out}")
    return 1 if report["requests_failed"] or report["shm_left_after_stop"] else 0


if __name__ == "__main__":
    sys.exit(main())
