"""Fixtures that start a real tritonserver through pytriton_torch."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import psutil
import pytest

from pytriton_torch import Triton, TritonConfig
from tests.conftest import free_port


def make_config(**overrides: object) -> TritonConfig:
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    return TritonConfig(**{**ports, **overrides})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def triton() -> Iterator[Triton]:
    """One server per test module; modules bind their models onto it."""
    with Triton(config=make_config()) as server:
        yield server


def children() -> list[psutil.Process]:
    return psutil.Process(os.getpid()).children(recursive=True)


def shm_entries(prefix: str) -> list[str]:
    return sorted(p.name for p in pathlib.Path("/dev/shm").glob(f"{prefix}*"))
