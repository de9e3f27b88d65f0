"""Whether a ``TritonConfig`` can be started: flags the tritonserver binary has, endpoints we can serve.

Checked before the server starts, so that a field the binary lacks (or an endpoint that cannot
work with bound models) fails with the field's name instead of a tritonserver crash or usage text.

Example::

    check_startable(config, find_dist())  # raises PyTritonTorchValidationError
"""

from __future__ import annotations

import functools
import logging
import os
import re
import subprocess
from collections.abc import Mapping

from ..exceptions import PyTritonTorchServerError, PyTritonTorchValidationError
from ._config import TritonConfig
from ._dist import TritonDist

LOGGER = logging.getLogger("pytriton_torch.server")
SAGEMAKER_OPT_IN = "PYTRITON_TORCH_ALLOW_SAGEMAKER"
"""Set to ``1`` to serve the SageMaker endpoint despite its unauthenticated model-loading API."""
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


def check_startable(
    config: TritonConfig, flags: frozenset[str], environ: Mapping[str, str] | None = None
) -> None:
    """Raise PyTritonTorchValidationError for a config this server (or this library) cannot start.

    ``environ`` (the process environment by default) holds the opt-in of the SageMaker endpoint.
    """
    environ = os.environ if environ is None else environ
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
        # tritonserver 2.51's SageMaker service listens on every interface and serves SageMaker's
        # multi-model API (POST /models loads a model from any folder on the machine, Python
        # backend code included) with no restriction: our admin token does not cover it.
        port = config.ports()["sagemaker"][1]
        risk = (
            f"tritonserver's SageMaker endpoint (port {port}) listens on every interface and lets any "
            "client that reaches it load a model from any folder on this machine (POST /models), which "
            "runs that folder's code, without the admin token"
        )
        if environ.get(SAGEMAKER_OPT_IN) != "1":
            raise PyTritonTorchValidationError(
                f"TritonConfig.allow_sagemaker=True refused: {risk}. Serve it only where the port is "
                f"reachable by SageMaker alone, and confirm with the environment variable {SAGEMAKER_OPT_IN}=1"
            )
        LOGGER.warning("%s (%s=1 is set)", risk, SAGEMAKER_OPT_IN)
