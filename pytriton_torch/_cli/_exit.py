"""Exit codes of the ``pytriton-torch`` command (documented in docs/cli.md)."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """What the process exit status means."""

    OK = 0
    """Success; for ``serve``: stopped by SIGINT/SIGTERM after serving."""
    FAILURE = 1
    """Runtime failure: the server died, an inference failed, a check failed, the server was unreachable."""
    USAGE = 2
    """Bad command line: unknown option, target not found, unreadable input file."""
    MODELS_FAILED = 3
    """``serve``: one or more models failed to load (or binding them raised)."""
    START_FAILED = 4
    """``serve``: tritonserver could not start (ports in use, binary or stub missing, start-up timeout)."""
    INTERRUPTED = 130
    """``serve``: SIGINT or SIGTERM arrived before the models were loaded (128 + SIGINT, as shells report)."""


class CliError(Exception):
    """An error the command reports in one line and turns into an exit code."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
