"""``pytriton-torch serve``: start tritonserver, bind or load the models with progress, serve until a signal."""

from __future__ import annotations

import dataclasses
import difflib
import signal
import threading
import traceback
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape

from .._server._config import TritonConfig, _parse
from ..exceptions import PyTritonTorchError, PyTritonTorchServerError, PyTritonTorchValidationError
from ..triton import Triton
from ._exit import CliError, ExitCode
from ._progress import ModelProgress
from ._target import BinderTarget, RepositoryTarget, resolve


class ReportingTriton(Triton):
    """A :class:`Triton` that reports ``bind``/``bind_module`` progress to ``on_event(model, stage, detail)``.

    The CLI hands this object to binder callables, so their models show up in the progress display.
    """

    def __init__(self, *, on_event: Callable[[str, str, str], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_event = on_event

    def bind(self, model_name: str, infer_func: Any, *args: Any, **kwargs: Any) -> None:
        self._on_event(model_name, "load", "")
        try:
            super().bind(model_name, infer_func, *args, **kwargs)
        except BaseException as exc:
            self._on_event(model_name, "failed", _describe(exc))
            raise
        instances = len(infer_func) if isinstance(infer_func, list | tuple) else 1
        self._on_event(model_name, "ready", f"{instances} instance(s)")

    def bind_module(self, model_name: str, module: Any, **kwargs: Any) -> list[Any]:
        detail = (
            "torch.compile, example call and warm-up" if kwargs.get("compile") else "example call and warm-up"
        )
        self._on_event(model_name, "warmup", detail)
        try:
            return super().bind_module(model_name, module, **kwargs)
        except BaseException as exc:
            self._on_event(model_name, "failed", _describe(exc))
            raise


def build_config(
    *,
    http_port: int | None,
    grpc_port: int | None,
    metrics_port: int | None,
    address: str | None,
    settings: Sequence[str],
) -> TritonConfig:
    """TritonConfig from the command line; ``settings`` are ``FIELD=VALUE`` strings (environment-style values)."""
    hints = typing.get_type_hints(TritonConfig)
    fields = [f.name for f in dataclasses.fields(TritonConfig)]
    values: dict[str, Any] = {}
    for setting in settings:
        name, sep, raw = setting.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise CliError(f"--config {setting!r}: expected FIELD=VALUE, e.g. log_verbose=1", ExitCode.USAGE)
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see docs/configuration.md"
            raise CliError(f"--config {setting!r}: TritonConfig has no field {name!r}{hint}", ExitCode.USAGE)
        try:
            values[name] = _parse(name, raw, hints[name])
        except PyTritonTorchValidationError as exc:
            raise CliError(f"--config {setting!r}: {exc.message}", ExitCode.USAGE) from None
    explicit = {"http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port}
    values.update({k: v for k, v in explicit.items() if v is not None})
    if address is not None:
        values.update(http_address=address, grpc_address=address, metrics_address=address)
    return TritonConfig(**values)


def serve(
    target: str,
    *,
    config: TritonConfig,
    models: Sequence[str],
    allow_pickle: bool,
    allow_partial: bool,
    console: Console,
) -> ExitCode:
    """Run ``serve`` to completion and return the exit code (raises CliError for early failures)."""
    resolved = _resolve(target)
    if isinstance(resolved, BinderTarget) and models:
        raise CliError(
            "--model selects models of a repository; a FILE.py:NAME target binds its own", ExitCode.USAGE
        )
    if isinstance(resolved, RepositoryTarget) and not hasattr(Triton, "load_repository"):
        raise CliError("this pytriton_torch has no repository mode (Triton.load_repository)", ExitCode.USAGE)

    progress = ModelProgress(console)
    triton = ReportingTriton(config=config, on_event=progress.event)
    # Until serve() installs its own handlers, SIGTERM (e.g. a pod deleted while its models load)
    # must still stop tritonserver and remove the workspace: turn it into KeyboardInterrupt.
    previous = _interrupt_on_sigterm()
    try:
        try:
            with console.status("starting tritonserver"):
                triton.run()
        except PyTritonTorchServerError as exc:
            raise CliError(f"tritonserver did not start: {exc.message}", ExitCode.START_FAILED) from None
        code = _load_models(triton, resolved, progress, models, allow_pickle, allow_partial, console)
        if code is not ExitCode.OK:
            return code
        _print_endpoints(triton, progress.ready, console)
        try:
            triton.serve()
        except PyTritonTorchServerError as exc:
            console.print(f"[red]server stopped:[/] {escape(exc.message)}")
            return ExitCode.FAILURE
        console.print("stopped")
        return ExitCode.OK
    except KeyboardInterrupt:
        console.print("interrupted before serving; stopping")
        return ExitCode.INTERRUPTED
    finally:
        triton.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt_on_sigterm() -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: types.FrameType | None) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _resolve(target: str) -> RepositoryTarget | BinderTarget:
    try:
        return resolve(target)
    except CliError:
        raise
    except Exception as exc:  # the user's module raised while being imported
        raise CliError(
            f"importing {target!r} failed:\n{traceback.format_exc()}{_describe(exc)}", ExitCode.FAILURE
        ) from None


def _load_models(
    triton: Triton,
    target: RepositoryTarget | BinderTarget,
    progress: ModelProgress,
    models: Sequence[str],
    allow_pickle: bool,
    allow_partial: bool,
    console: Console,
) -> ExitCode:
    with progress:
        if isinstance(target, BinderTarget):
            try:
                target.binder(triton)
            except Exception as exc:
                if not isinstance(exc, PyTritonTorchError):
                    console.print(escape(traceback.format_exc()))
                console.print(
                    f"[red]{target.source}:{target.object_name} failed:[/] {escape(_describe(exc))}"
                )
                return ExitCode.MODELS_FAILED
            if not progress.ready:
                console.print(f"[red]{target.source}:{target.object_name} bound no model[/]")
                return ExitCode.MODELS_FAILED
            return ExitCode.OK
        load_repository = getattr(triton, "load_repository")  # noqa: B009 - added by repository mode
        report = load_repository(
            target.path, models=list(models) or None, on_event=progress.event, allow_pickle=allow_pickle
        )
    failed: dict[str, str] = dict(report.failed)
    for name, reason in failed.items():
        if name not in progress.failed:
            console.print(f"[red]model {escape(repr(name))} failed:[/] {escape(reason)}")
    if not report.loaded:
        console.print(f"[red]no model of {target.path} loaded[/]")
        return ExitCode.MODELS_FAILED
    if failed and not allow_partial:
        console.print(f"[red]{len(failed)} model(s) failed to load[/]; --allow-partial serves the others")
        return ExitCode.MODELS_FAILED
    progress.ready[:] = list(report.loaded)
    return ExitCode.OK


def _print_endpoints(triton: Triton, models: Sequence[str], console: Console) -> None:
    config = triton.config
    lines = [f"serving {', '.join(models)}"]
    if config.allow_http is not False:
        lines.append(f"  HTTP     {triton.http_url}  (health: {triton.http_url}/v2/health/ready)")
    if config.allow_grpc is not False:
        lines.append(f"  gRPC     {triton.grpc_url}")
    if config.allow_metrics is not False:
        lines.append(f"  metrics  {triton.metrics_url}")
    lines.append("Ctrl-C or SIGTERM stops the server")
    console.print(escape("\n".join(lines)))


def _describe(exc: BaseException) -> str:
    return exc.message if isinstance(exc, PyTritonTorchError) else f"{type(exc).__name__}: {exc}"
