"""The ``pytriton-torch`` command: ``serve``, ``infer``, ``check``, ``build`` and ``fetch-server``.

Example::

    pytriton-torch check
    pytriton-torch fetch-server
    pytriton-torch serve examples/add_sub_python/server.py:bind_models --http-port 8000
    pytriton-torch serve ./model_repository --model resnet --address 0.0.0.0
    pytriton-torch infer AddSub --input a='[1, 2]' --input b=b.npy --url grpc://localhost:8001

Exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 models failed to load, 4 tritonserver did
not start (see :class:`pytriton_torch._cli._exit.ExitCode` and docs/cli.md).
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from ._cli._exit import CliError, ExitCode

app = typer.Typer(
    name="pytriton-torch",
    help="Serve PyTorch models and Python functions through NVIDIA Triton.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

_LEVELS = ("debug", "info", "warning", "error")


def _setup_logging(level: str) -> None:
    if level.lower() not in _LEVELS:
        raise typer.BadParameter(f"{level!r} is not one of {', '.join(_LEVELS)}", param_hint="--log-level")
    handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s", force=True)
    logging.getLogger("pytriton_torch").setLevel(level.upper())


@app.callback()
def _root(
    log_level: Annotated[
        str, typer.Option("--log-level", help="Log level of pytriton_torch: debug, info, warning or error.")
    ] = "warning",
) -> None:
    """Serve PyTorch models and Python functions through NVIDIA Triton."""
    _setup_logging(log_level)


@app.command()
def serve(
    target: Annotated[
        str,
        typer.Argument(
            help="A model repository folder, FILE.py[:NAME] or package.module[:NAME]; NAME (default "
            "bind_models) is a callable that takes the Triton and binds models on it.",
            show_default=False,
        ),
    ],
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Repository models to load (default: all). Repeatable."),
    ] = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP port (default 8000).")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port (default 8001).")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus metrics port (default 8002).")] = None,
    address: Annotated[
        str | None,
        typer.Option(help="Listen address of every endpoint (default 127.0.0.1; 0.0.0.0 in containers)."),
    ] = None,
    config: Annotated[
        list[str] | None,
        typer.Option(
            "--config", "-c", help="Any TritonConfig field as FIELD=VALUE, e.g. log_verbose=1. Repeatable."
        ),
    ] = None,
    allow_pickle: Annotated[
        bool,
        typer.Option(
            help="Let repository models load pickled (non-TorchScript) weights. Trust the files first."
        ),
    ] = False,
    allow_partial: Annotated[
        bool, typer.Option(help="Keep serving the models that loaded when others of the repository failed.")
    ] = False,
) -> None:
    """Start tritonserver, load or bind the models (with progress), serve until Ctrl-C or SIGTERM."""
    from ._cli._serve import build_config
    from ._cli._serve import serve as run_serve

    try:
        triton_config = build_config(
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            address=address,
            settings=config or [],
        )
        code = run_serve(
            target,
            config=triton_config,
            models=model or [],
            allow_pickle=allow_pickle,
            allow_partial=allow_partial,
            console=console,
        )
    except CliError as exc:
        _fail(exc)
    raise typer.Exit(int(code))


@app.command()
def infer(
    model: Annotated[str, typer.Argument(help="Model name.", show_default=False)],
    input: Annotated[
        list[str] | None,
        typer.Option(
            "--input", "-i", help="NAME=FILE.npy, NAME=FILE.json or NAME=JSON (e.g. x='[[1,2]]'). Repeatable."
        ),
    ] = None,
    url: Annotated[
        str, typer.Option(help="host:port or http://host:port for HTTP, grpc://host:port for gRPC.")
    ] = ("localhost:8000"),
    output: Annotated[
        list[str] | None,
        typer.Option("--output", "-o", help="Outputs to request (default: all). Repeatable."),
    ] = None,
    model_version: Annotated[str, typer.Option(help="Model version (default: the server's choice).")] = "",
    request_id: Annotated[
        str, typer.Option(help="Request id; the server repeats it in errors and logs.")
    ] = "",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outputs as JSON on stdout.")] = False,
    save: Annotated[
        pathlib.Path | None,
        typer.Option(
            help="Also write each output to DIR/NAME.npy (DIR/NAME_<i>.npy for streamed responses).",
            file_okay=False,
        ),
    ] = None,
) -> None:
    """Send one request to MODEL and print its outputs (every response, for a streaming model over gRPC)."""
    from ._cli._infer import infer as run_infer
    from ._cli._infer import to_json

    try:
        result = run_infer(
            model,
            input or [],
            url=url,
            version=model_version,
            outputs=output or [],
            request_id=request_id,
            timeout_s=timeout,
        )
    except CliError as exc:
        _fail(exc)
    responses, streamed = result.responses, result.streamed
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        for index, results in enumerate(responses):
            for name, array in results.items():
                file = f"{name}_{index}.npy" if streamed else f"{name}.npy"
                np.save(save / file, array, allow_pickle=array.dtype == object)
    if as_json:
        doc: dict[str, object] = {"model_name": model}
        if streamed:
            doc["responses"] = [to_json(results) for results in responses]
        else:
            doc["outputs"] = to_json(responses[0])
        out.print_json(json.dumps(doc))
        return
    for index, results in enumerate(responses):
        title = f"{model} response {index + 1} of {len(responses)}" if streamed else f"{model} outputs"
        table = Table(title=title, title_justify="left")
        for column in ("name", "datatype", "shape", "value"):
            table.add_column(column)
        for name, entry in to_json(results).items():
            array = results[name]
            value = np.array2string(array, threshold=64) if array.dtype != object else str(entry["data"])
            table.add_row(name, entry["datatype"], str(entry["shape"]), escape(value))
        out.print(table)
    if streamed and not responses:
        out.print(f"{model}: the stream ended without a response")


@app.command()
def check(
    http_port: Annotated[int, typer.Option(help="HTTP port to check.")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port to check.")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Metrics port to check.")] = 8002,
    address: Annotated[str, typer.Option(help="Address the ports would listen on.")] = "127.0.0.1",
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON on stdout.")] = False,
    start: Annotated[
        bool,
        typer.Option("--start", help="Also start tritonserver on those ports and serve one test request."),
    ] = False,
) -> None:
    """Check this machine: glibc, libpython, stub, /dev/shm, free ports, torch, CUDA. Exit 1 if one fails."""
    import dataclasses

    from ._cli._check import FAIL, run_checks

    ports = {"http": (address, http_port), "grpc": (address, grpc_port), "metrics": (address, metrics_port)}
    if start:
        with console.status("starting tritonserver with a test model"):
            findings = run_checks(ports, start=True)
    else:
        findings = run_checks(ports)
    if as_json:
        out.print_json(json.dumps([dataclasses.asdict(f) for f in findings]))
    else:
        style = {"ok": "green", "warn": "yellow", "fail": "red", "info": "blue"}
        table = Table(show_header=False, box=None)
        table.add_column()
        table.add_column()
        table.add_column(overflow="fold")
        for finding in findings:
            fix = f"\n  [dim]fix: {escape(finding.fix)}[/]" if finding.fix else ""
            color = style[finding.status]
            table.add_row(f"[{color}]{finding.status.upper()}[/]", finding.name, escape(finding.detail) + fix)
        out.print(table)
    if any(f.status == FAIL for f in findings):
        raise typer.Exit(int(ExitCode.FAILURE))


@app.command()
def build() -> None:
    """Compile our small C libraries (preload, native backend) beside the package (for images without a compiler).

    Without this step they are compiled at the first start and cached per user, which needs a C compiler
    on that machine. Run it as the user who installed pytriton_torch (root in a container build).
    """
    from ._server._preload import build_packaged_backend, build_packaged_library
    from .exceptions import PyTritonTorchServerError

    try:
        libraries = [build_packaged_library(), build_packaged_backend()]
    except PyTritonTorchServerError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(int(ExitCode.FAILURE)) from None
    for library in libraries:
        out.print(f"built {library}")


@app.command("fetch-server")
def fetch_server(
    wheel: Annotated[
        pathlib.Path | None,
        typer.Option(
            "--wheel",
            help="A local copy of the pinned nvidia-pytriton wheel (offline); its sha256 is checked.",
            dir_okay=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Unpack again even if the cache holds the server.")
    ] = False,
) -> None:
    """Download the pinned nvidia-pytriton wheel once and unpack tritonserver into the per-user cache.

    Only the server files are kept (binary, libraries, backends); nvidia-pytriton is not installed,
    so NumPy is not pinned. Not needed when nvidia-pytriton is installed with pip.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from ._server import _fetch
    from .exceptions import PyTritonTorchServerError

    try:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task(f"downloading nvidia-pytriton {_fetch.WHEEL_VERSION}", total=None)

            def advance(done: int, total: int | None) -> None:
                bar.update(task, completed=done, total=total)
                if done == total:
                    bar.update(task, description="checking and unpacking")

            target = _fetch.fetch_server(wheel, force=force, progress=advance)
    except PyTritonTorchServerError as exc:
        console.print(f"[red]error:[/] {escape(exc.message)}")
        raise typer.Exit(int(ExitCode.FAILURE)) from None
    out.print(f"tritonserver {_fetch.SERVER_VERSION} unpacked in {target}")


def _fail(exc: CliError) -> typer.Exit:
    console.print(f"[red]error:[/] {escape(exc.message)}")
    raise typer.Exit(int(exc.code))


def main() -> None:
    """Entry point of the ``pytriton-torch`` script."""
    app()


if __name__ == "__main__":
    main()
