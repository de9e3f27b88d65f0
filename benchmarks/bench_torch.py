#!/usr/bin/env python3
"""CNN benchmark: a compute-bound ResNet-18-sized network served three ways, plus its limit.

* ``direct``          the module called in a loop in its own process (``--instances`` threads), at
                      the batch sizes Triton's dynamic batcher formed for ``pytriton_torch`` in the
                      window just before, in the layout ``bind_module`` serves it in (the limit:
                      no serving at all).
* ``pytriton_torch``  ``Triton.bind_module`` (``--instances``, dynamic batching up to 32; with the
                      default ``memory_format="auto"`` this CNN is served channels-last).
* ``pytriton``        PyTriton 0.7 with a hand-written ``@batch`` infer function running the same
                      module under ``torch.inference_mode()`` (numpy -> torch -> numpy), as a user
                      would write it.
* ``pytriton_cl``     the same, with the module and inputs converted to channels-last by hand:
                      the same compute as ``pytriton_torch``, so the ratio isolates the serving path.

Every request carries one image (``[1, 3, S, S]`` fp32, S = ``--size``, 64 by default); the same
client process (``--concurrency`` threads of ``tritonclient.grpc``) drives both servers. The two
servers' measurement windows are interleaved (``--rounds``) so that drift on a shared machine hits
both alike. Targets (CPU): served throughput >= 80 % of the direct limit and >= 1.2x PyTriton.

Usage::

    python benchmarks/bench_torch.py [--duration 15] [--rounds 2] [--size 64] [--threads 2]
    python benchmarks/bench_torch.py --threads 1 --instances 2   # one core per instance
    python benchmarks/bench_torch.py --device cuda --size 224 [--cuda-graphs]   # on a GPU machine

On CUDA, compare runs with and without ``--no-pinned`` (page-locked shared memory) and
``--cuda-graphs`` for the effect of each.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import pathlib
import platform
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
MAX_BATCH = 32


def build_model(threads: int) -> Any:
    """ResNet-18's layout (11.7 M parameters): 4 stages of 2 basic blocks, 64-512 channels."""
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.down(x))

    class ResNet18(nn.Module):
        def __init__(self, classes: int = 1000) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            )
            layers, cin = [], 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
                cin = cout
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(512, classes)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            x = self.layers(self.stem(image))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)).softmax(dim=1)

    return ResNet18().eval()


# ---------------------------------------------------------------------------------------------
# Servers (each in its own process)
# ---------------------------------------------------------------------------------------------


def input_layout(model: Any, memory_format: str) -> Any:
    """Give a hand-written setup the layout ``bind_module`` picks for this CNN (see docs/torch.md).

    Converts the model when that layout is channels-last; returns the layout to feed inputs in.
    """
    import torch

    if memory_format == "contiguous":
        return torch.contiguous_format
    model.to(memory_format=torch.channels_last)
    return torch.channels_last


def serve_main(setup: str, ports: list[int], args: argparse.Namespace) -> None:
    import torch

    size, device = args.size, args.device
    model = build_model(args.threads).to(device)
    http, grpc, metrics = ports
    if setup == "pytriton_torch":
        from pytriton_torch import DynamicBatcher, ModelConfig, Triton, TritonConfig

        with Triton(config=TritonConfig(http_port=http, grpc_port=grpc, metrics_port=metrics)) as triton:
            runners = triton.bind_module(
                "cnn",
                model,
                example_inputs=torch.zeros(1, 3, size, size),
                config=ModelConfig(max_batch_size=MAX_BATCH, batcher=DynamicBatcher()),
                device=device,
                instances=args.instances,
                cuda_graphs=args.cuda_graphs,
                memory_format=args.memory_format,
            )
            print(f"channels-last inputs: {sorted(runners[0].channels_last)}", flush=True)
            triton.serve()
    elif setup in ("pytriton", "pytriton_cl"):
        from pytriton.decorators import batch
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig

        # pytriton: what a user writes by hand (numpy -> torch -> numpy); pytriton_cl: the same
        # plus the channels-last layout bind_module chooses, so only the serving path differs.
        layout = input_layout(model, "channels_last" if setup == "pytriton_cl" else "contiguous")

        def make_infer() -> Any:
            @batch
            def infer(image: np.ndarray) -> dict[str, np.ndarray]:
                with torch.inference_mode():
                    x = torch.from_numpy(image).to(device)
                    if layout is torch.channels_last:
                        x = x.contiguous(memory_format=layout)
                    return {"OUTPUT__0": model(x).cpu().numpy()}

            return infer

        with Triton(config=TritonConfig(http_port=http, grpc_port=grpc, metrics_port=metrics)) as triton:
            triton.bind(
                "cnn",
                [make_infer() for _ in range(args.instances)],
                inputs=[Tensor(name="image", dtype=np.float32, shape=(3, size, size))],
                outputs=[Tensor(name="OUTPUT__0", dtype=np.float32, shape=(1000,))],
                config=ModelConfig(max_batch_size=MAX_BATCH, batcher=DynamicBatcher()),
            )
            triton.serve()
    else:
        raise SystemExit(f"unknown setup {setup!r}")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Server:
    def __init__(self, setup: str, args: argparse.Namespace, log_dir: pathlib.Path) -> None:
        self.setup = setup
        self.ports = free_ports(3)
        self.log = log_dir / f"{setup}.log"
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED="1")
        if args.no_pinned:
            env["PYTRITON_TORCH_PINNED"] = "0"
        if setup in ("pytriton", "pytriton_cl"):  # PyTriton's stub needs this interpreter's libpython first
            env["LD_LIBRARY_PATH"] = ":".join(
                p for p in (sysconfig.get_config_var("LIBDIR"), env.get("LD_LIBRARY_PATH")) if p
            )
        command = [sys.executable, __file__, "--serve", setup, "--ports", ",".join(map(str, self.ports))]
        command += ["--size", str(args.size), "--threads", str(args.threads), "--device", args.device]
        command += ["--instances", str(args.instances), "--memory-format", args.memory_format]
        command += ["--cuda-graphs"] if args.cuda_graphs else []
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{setup} did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports[1]}"

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[0]}/v2/models/cnn/ready", timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def batch_sizes(self) -> dict[int, int]:
        """Executions per batch size so far, from Triton's statistics (empty where PyTriton restricts them)."""
        try:
            url = f"http://127.0.0.1:{self.ports[0]}/v2/models/cnn/stats"
            with urllib.request.urlopen(url, timeout=5) as r:
                stats = json.loads(r.read())["model_stats"][0]
        except (urllib.error.URLError, OSError, KeyError, IndexError, ValueError):
            return {}
        return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


def drive(url: str, size: int, concurrency: int, duration: float) -> dict[str, Any]:
    """``concurrency`` threads sending one image per request for ``duration`` seconds."""
    import tritonclient.grpc as grpcclient

    image = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
    done: list[int] = []
    errors: list[str] = []
    stop_at = time.monotonic() + duration
    lock = threading.Lock()

    def worker() -> None:
        client = grpcclient.InferenceServerClient(url)
        item = grpcclient.InferInput("image", list(image.shape), "FP32")
        item.set_data_from_numpy(image)
        count = 0
        while time.monotonic() < stop_at:
            try:
                client.infer("cnn", [item])
                count += 1
            except Exception as exc:
                errors.append(str(exc)[:200])
        with lock:
            done.append(count)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    return {"requests": sum(done), "seconds": elapsed, "rps": sum(done) / elapsed, "errors": len(errors)}


def direct_worker(
    conn: Any, size: int, threads: int, device: str, instances: int, memory_format: str
) -> None:
    """Process body: load the module once, then answer (batches, seconds) with images/s.

    ``instances`` threads call the one module concurrently, as the served instances do.
    """
    import torch

    model = build_model(threads).to(device)
    layout = input_layout(model, memory_format)
    inputs: dict[int, Any] = {}
    with torch.inference_mode():
        while True:
            job = conn.recv()
            if job is None:
                return
            batches, seconds = job
            # Run the batch sizes in the proportions the batcher formed them, for ``seconds``.
            order = [b for b, n in sorted(batches.items()) for _ in range(n)]
            np.random.default_rng(0).shuffle(order)
            for b in set(order):
                if b not in inputs:
                    inputs[b] = torch.randn(b, 3, size, size, device=device)
                    model(inputs[b].contiguous(memory_format=layout))  # warm-up of this shape
            images = [0] * instances
            began = time.perf_counter()
            job = (model, inputs, order, layout, began + seconds, images)
            workers = [threading.Thread(target=_direct_loop, args=(*job, k)) for k in range(instances)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            conn.send(sum(images) / (time.perf_counter() - began))


def _direct_loop(
    model: Any, inputs: dict[int, Any], order: list[int], layout: Any, end: float, images: list[int], k: int
) -> None:
    import torch

    with torch.inference_mode():
        i = k
        while time.perf_counter() < end:
            b = order[i % len(order)]
            # Input layout conversion and the answer on the host, as a server does them.
            model(inputs[b].contiguous(memory_format=layout)).cpu()
            images[k] += b
            i += 1


class Direct:
    """The limit: the module called in a loop in its own process, at the batch sizes formed."""

    def __init__(self, args: argparse.Namespace) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        job = (child, args.size, args.threads, args.device, args.instances, args.memory_format)
        self._proc = ctx.Process(target=direct_worker, args=job, daemon=True)
        self._proc.start()

    def window(self, batches: dict[int, int], seconds: float) -> dict[str, Any]:
        self._conn.send((batches, seconds))
        return {"rps": float(self._conn.recv()), "batches": batches}

    def stop(self) -> None:
        self._conn.send(None)
        self._proc.join(30)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measurement window")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=64, help="image height and width")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads in every setup")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (same device for every setup)")
    parser.add_argument("--cuda-graphs", action="store_true", help="bind_module(cuda_graphs=True) on CUDA")
    parser.add_argument("--no-pinned", action="store_true", help="PYTRITON_TORCH_PINNED=0 (pageable copies)")
    parser.add_argument("--instances", type=int, default=1, help="model instances (and direct-call threads)")
    parser.add_argument(
        "--memory-format",
        default="auto",
        choices=["auto", "channels_last", "contiguous"],
        help="bind_module(memory_format=...); the direct limit uses the same layout",
    )
    parser.add_argument("--setups", default="pytriton_torch,pytriton,pytriton_cl")
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "results" / "torch_cnn.json")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        ports = [int(p) for p in args.ports.split(",")]
        serve_main(args.serve, ports, args)
        return 0

    args.out.parent.mkdir(parents=True, exist_ok=True)
    setups = args.setups.split(",")
    servers: dict[str, Server] = {}
    try:
        for name in setups:
            servers[name] = Server(name, args, args.out.parent)
    except BaseException:  # stop the ones already up: a failed start must not leave servers behind
        for server in servers.values():
            server.stop()
        raise
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in [*setups, "direct"]}
    batches: dict[int, int] = {}
    direct = Direct(args)
    try:
        for server in servers.values():  # warm both up with a short window
            drive(server.grpc_url, args.size, args.concurrency, 3)
        for round_ in range(args.rounds):
            for name in setups if round_ % 2 == 0 else list(reversed(setups)):
                server = servers[name]
                before = server.batch_sizes()
                window = drive(server.grpc_url, args.size, args.concurrency, args.duration)
                formed = {b: n - before.get(b, 0) for b, n in server.batch_sizes().items()}
                window["batches"] = {b: n for b, n in formed.items() if n}
                results[name].append(window)
                print(f"round {round_ + 1} {name:15s} {window['rps']:8.1f} img/s  errors {window['errors']}")
                if name == "pytriton_torch" and window["batches"]:
                    for b, n in window["batches"].items():
                        batches[b] = batches.get(b, 0) + n
                    # The limit for this window: the same batch sizes, called directly, right after.
                    limit = direct.window(window["batches"], args.duration)
                    results["direct"].append(limit)
                    print(f"round {round_ + 1} {'direct':15s} {limit['rps']:8.1f} img/s")
    finally:
        direct.stop()
        for server in servers.values():
            server.stop()
    served = {
        name: float(np.mean([w["rps"] for w in windows])) for name, windows in results.items() if windows
    }
    ours, best = served.get("pytriton_torch"), served.pop("direct", None)
    theirs, theirs_cl = served.get("pytriton"), served.get("pytriton_cl")
    ratios = {
        "pytriton_torch / direct": ours / best if ours and best else None,
        "pytriton_torch / pytriton": ours / theirs if ours and theirs else None,
        "pytriton_torch / pytriton_cl": ours / theirs_cl if ours and theirs_cl else None,
    }
    mean_batch = sum(b * n for b, n in batches.items()) / max(1, sum(batches.values()))
    print()
    print(
        f"ResNet-18-sized CNN, 1 image [3, {args.size}, {args.size}] per request, concurrency "
        f"{args.concurrency}, torch threads {args.threads}, instances {args.instances}, "
        f"memory format {args.memory_format}, mean batch formed {mean_batch:.1f}"
    )
    print(f"{'setup':16s} {'img/s':>8s}")
    print(f"{'direct (limit)':16s} {best or float('nan'):8.1f}")
    for name, value in served.items():
        print(f"{name:16s} {value:8.1f}")
    print(
        f"pytriton_torch / direct   = {ratios['pytriton_torch / direct'] or float('nan'):.2f}  (target >= 0.80)"
    )
    print(
        f"pytriton_torch / pytriton = {ratios['pytriton_torch / pytriton'] or float('nan'):.2f}  (target >= 1.20)"
    )
    print(
        f"pytriton_torch / pytriton_cl = {ratios['pytriton_torch / pytriton_cl'] or float('nan'):.2f}"
        "  (same layout by hand: the serving path alone)"
    )
    report = {
        "benchmark": "torch_cnn",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "args": {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()},
        "windows": results,
        "served_rps": served,
        "direct_rps": best,
        "batches_formed": batches,
        "ratios": ratios,
    }
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
