"""Shutdown of open streams: let them finish for a while, then cancel the rest, and say which.

tritonserver unloads a streaming model only once its open streams have ended, so ``stop()``
bounds that wait: streams get a grace period (most of ``exit_timeout_secs``) to finish, and those
still open are cancelled (their clients get an error, their generators are closed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from ._model import BoundModel

LOGGER = logging.getLogger("pytriton_torch")

_TICK_S = 0.05


def grace_period(exit_timeout_s: float) -> float:
    """How long open streams may run on at shutdown before they are cancelled."""
    return max(exit_timeout_s / 2, exit_timeout_s - 5.0)


def open_streams(models: Sequence[BoundModel]) -> int:
    return sum(model.open_streams() for model in models if model.info.decoupled)


class StreamSettler:
    """Runs beside the unload at shutdown: waits for open streams, cancels them at the deadline."""

    def __init__(self, models: Sequence[BoundModel], grace_s: float) -> None:
        self._models = [model for model in models if model.info.decoupled]
        self._grace_s = grace_s
        self._thread = threading.Thread(target=self._run, name="pytriton_torch-stream-shutdown", daemon=True)
        if self._models:
            self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        start = time.monotonic()
        initial = open_streams(self._models)
        while True:
            still = open_streams(self._models)
            if not still:
                if initial:
                    LOGGER.info("shutdown: finished %d open stream(s)", initial)
                return
            if time.monotonic() - start >= self._grace_s:
                break
            time.sleep(_TICK_S)
        reason = "the server is stopping"
        cancelled = sum(model.refuse_streams(reason) for model in self._models)
        LOGGER.warning(
            "shutdown: cancelled %d open stream(s) still running after %.1f s (%d of %d had finished)",
            cancelled,
            self._grace_s,
            max(0, initial - cancelled),
            initial,
        )
