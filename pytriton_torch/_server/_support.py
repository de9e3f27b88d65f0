"""Whether a ``TritonConfig`` can be started: flags the tritonserver binary has, endpoints we can serve.

Checked before the server starts, so that a field the binary lacks (or an endpoint that cannot
work with bound models) fails with the field's name instead of a tritonserver crash or usage text.

Example::

    check_startable(config, find_dist())  # raises PyTritonTorchValidationError
"""

from __future__ import annotations

import functools
import logging
import re
import subprocess
from collections.abc import Mapping

from ..exceptions import PyTritonTorchServerError, PyTritonTorchValidationError
from ._config import TritonConfig
from ._dist import TritonDist

LOGGER = logging.getLogger("pytriton_torch.server")
_OPTION = re.compile(r"^\s+(--[a-z0-9][a-z0-9-]*)", re.MULTILINE)


@functools.cache
def _flags_of(binary: str, library_path: str) -> frozenset[str]:
    try:
        done = subprocess.run(
            [binary, "--help"],
            capture_output=True,
            text=True,
            timeout=30,
            env={"LD_LIBRARY_PATH": library_path},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PyTritonTorchServerError(f"cannot run {binary} --help: {exc}") from None
    return frozenset(_OPTION.findall(done.stdout + done.stderr))


def server_flags(dist: TritonDist, env: Mapping[str, str]) -> frozenset[str]:
    """The command-line flags (``--name``) the distribution's tritonserver lists in ``--help``."""
    return _flags_of(str(dist.server_binary), env.get("LD_LIBRARY_PATH", ""))


def check_startable(config: TritonConfig, flags: frozenset[str]) -> None:
    """Raise PyTritonTorchValidationError for a config this server (or this library) cannot start."""
    if flags:  # an empty answer means --help printed nothing we understand: let tritonserver judge
        config.check_supported(flags)
    if config.allow_vertex_ai:
        # tritonserver's Vertex AI service refuses to start unless its default model is loaded when
        # the server starts, and then the server crashes; bound models load once it is live.
        raise PyTritonTorchValidationError(
            "TritonConfig.allow_vertex_ai=True cannot be served: tritonserver's Vertex AI endpoint needs "
            "its default model loaded when the server starts, and pytriton_torch loads bound models after "
            "the server is live (PyTriton starts the server lazily for Vertex AI, which is not supported); "
            "leave allow_vertex_ai unset"
        )
    if config.allow_sagemaker:
        LOGGER.warning(
            "the SageMaker endpoint (port %d) listens on every interface: tritonserver has no address "
            "setting for it",
            config.ports()["sagemaker"][1],
        )
