"""Rich progress display for models going through parse, load, warm-up and ready."""

from __future__ import annotations

import threading
import time
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

STAGES = ("parse", "load", "warmup", "ready", "failed")
_LABELS = {
    "parse": "reading config",
    "load": "loading",
    "warmup": "warming up",
    "compile": "compiling",
    "ready": "[green]ready[/]",
    "failed": "[red]failed[/]",
}


class ModelProgress:
    """One spinner line per model; call :meth:`event` with ``(model, stage, detail)``.

    On a terminal the lines are live spinners; otherwise (a container log) each event is printed
    as a line. It is the ``on_event`` callback of ``Triton.load_repository`` and is also fed by the CLI's
    ``bind``/``bind_module`` wrappers. Safe to call from any thread.

    Example::

        with ModelProgress(console) as progress:
            triton.load_repository(path, on_event=progress.event)
        print(progress.failed)
    """

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            SpinnerColumn(finished_text="•"),
            TextColumn("[bold]{task.fields[model]}"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()
        self.ready: list[str] = []
        self.failed: dict[str, str] = {}
        self.started = time.monotonic()
        self._first_seen: dict[str, float] = {}
        # Live spinners need a terminal; in a log (container, CI) every event becomes a line instead.
        self._live = console.is_terminal

    def __enter__(self) -> ModelProgress:
        if self._live:
            self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live:
            self._progress.stop()

    def event(self, model: str, stage: str, detail: str = "") -> None:
        """Record that ``model`` reached ``stage`` (one of :data:`STAGES`, or ``compile``)."""
        label = _LABELS.get(stage, stage)
        text = f"{label} [dim]{escape(detail)}[/]" if detail and stage != "failed" else label
        finished = stage in ("ready", "failed")
        with self._lock:
            if not self._live and stage != "failed":  # a log, not a terminal: one line per event
                now = time.monotonic()
                elapsed = now - self._first_seen.setdefault(model, now)
                self._console.print(f"[bold]{escape(model)}[/]: {text} [dim]({elapsed:.1f}s)[/]")
            task = self._tasks.get(model)
            if task is None:
                task = self._progress.add_task(text, model=model, total=1)
                self._tasks[model] = task
            else:
                self._progress.update(task, description=text)
            if finished:
                self._progress.update(task, completed=1)
                if stage == "ready":
                    self.ready.append(model)
                else:
                    self.failed[model] = detail
                    self._progress.console.print(
                        f"[red]model {escape(repr(model))} failed:[/] {escape(detail)}"
                    )
