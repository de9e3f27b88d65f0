"""Shared test helpers."""

from __future__ import annotations

import pathlib
import socket
import subprocess
import sys

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def ports() -> dict[str, int]:
    return {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}


EXAMPLE_CLIENT_TIMEOUT_S = 120.0


def run_client(script: pathlib.Path, url: str) -> subprocess.CompletedProcess[str]:
    """Run an example's ``client.py --url URL`` from its folder; the caller checks the result."""
    return subprocess.run(
        [sys.executable, str(script), "--url", url],
        cwd=script.parent,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_CLIENT_TIMEOUT_S,
        check=False,
    )
