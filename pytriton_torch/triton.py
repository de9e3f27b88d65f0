"""``Triton``: start tritonserver, bind Python callables as models, serve.

Example::

    import numpy as np
    from pytriton_torch.decorators import batch
    from pytriton_torch.model_config import ModelConfig, Tensor
    from pytriton_torch.triton import Triton, TritonConfig

    @batch
    def infer(x):
        return {"y": x * 2}

    with Triton(config=TritonConfig(http_port=8000)) as triton:
        triton.bind(
            "double",
            infer,
            inputs=[Tensor(name="x", dtype=np.float32, shape=(-1,))],
            outputs=[Tensor(name="y", dtype=np.float32, shape=(-1,))],
            config=ModelConfig(max_batch_size=64),
        )
        triton.serve()
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import inspect
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import threading
import time
import types
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from ._channel._shm import remove_segments, remove_stale_segments
from ._channel._transport import TRANSPORTS
from ._channel._worker import EventLoopThread
from ._model import BoundModel
from ._repository import RepositoryReport
from ._server._config import TritonConfig
from ._server._dist import TritonDist, find_dist
from ._server._preload import Secrets, backend_library, preload_library
from ._server._process import TritonProcess, check_ports_free
from ._server._support import check_startable, server_flags
from ._server._workspace import Workspace, check_root_length, remove_stale_workspaces
from ._stream_shutdown import StreamSettler, grace_period, open_streams
from .exceptions import (
    PyTritonTorchInvalidOperationError,
    PyTritonTorchModelError,
    PyTritonTorchServerError,
    PyTritonTorchValidationError,
)
from .model_config import ModelConfig, Tensor

LOGGER = logging.getLogger("pytriton_torch")

ADMIN_HEADER = "pytriton-torch-admin-token"
# Endpoints that change the server (or read its memory) answer only requests carrying the admin
# token; inference, health, metadata, model config, statistics and metrics stay open.
RESTRICTED_APIS = ("model-repository", "shared-memory", "logging", "trace")
_PYTHON_BACKEND_SHM_DEFAULT = 4 * 1024 * 1024
_PYTHON_BACKEND_SHM_GROWTH = 32 * 1024 * 1024
BACKENDS = ("python", "native")
_KILL_GRACE_S = 2.0
"""How long tritonserver may take to exit after the exit timeout before it is killed."""


_UNREPORTED: set[int] = set()
"""Servers (by ``id``) that died while serving in the background, with nobody told yet."""


def _exit_nonzero_if_unreported() -> None:
    """At interpreter exit, a server that died under ``run()`` unnoticed makes the exit status 1.

    Registered when this module is imported, so it runs after the ``stop`` handlers of the servers.
    """
    if not _UNREPORTED:
        return
    LOGGER.critical(
        "exiting with status 1: tritonserver stopped unexpectedly while serving in the background"
    )
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(1)


atexit.register(_exit_nonzero_if_unreported)


class Triton:
    """A tritonserver child process plus the Python models bound to it.

    Use it as a context manager (the server starts on enter and stops on exit) or call
    :meth:`run` / :meth:`serve` and :meth:`stop` yourself. ``bind`` works before and after start.

    Example::

        with Triton() as triton:
            triton.bind("echo", echo_fn, inputs=[...], outputs=[...])
            triton.serve()  # until SIGINT or SIGTERM

    Args:
        config: tritonserver options; fields left unset come from ``PYTRITON_TRITON_CONFIG_*``.
        workspace: Folder for the model store and sockets (default: a private temporary folder).
        connect_timeout_s: How long a starting model instance waits for this process.
        channel: Transport between Triton's stubs and this process: ``"unix"`` (default, a Unix
            stream socket) or ``"zmq"`` (ZeroMQ ipc); also ``PYTRITON_TORCH_CHANNEL``.
        channel_spin_us: How long a model instance busy-polls (yielding the CPU) for its answer
            before sleeping; trades a little CPU for ~0.1 ms less latency. 0 disables.
        backend: Who forwards batches inside tritonserver: ``"python"`` (default: the proxy in
            Triton's Python-backend stub, one stub process per instance) or ``"native"`` (opt-in,
            experimental: our own C backend, compiled at first use, talks to this process directly;
            no stub process). Also ``PYTRITON_TORCH_BACKEND`` (ignored, with a warning, for the
            ``zmq`` channel). The native backend serves
            non-streaming models bound with ``bind``/``bind_module`` over the ``unix`` channel;
            streaming (decoupled) and repository models keep the Python backend. The default stays
            ``"python"`` until the whole test suite passes on the native backend.
    """

    def __init__(
        self,
        *,
        config: TritonConfig | None = None,
        workspace: str | os.PathLike[str] | None = None,
        connect_timeout_s: float = 60.0,
        channel: str | None = None,
        channel_spin_us: float = 250.0,
        backend: str | None = None,
    ) -> None:
        self._channel = channel or os.environ.get("PYTRITON_TORCH_CHANNEL", "unix")
        if self._channel not in TRANSPORTS:
            raise PyTritonTorchValidationError(
                f"channel={self._channel!r} is not supported; expected one of {', '.join(TRANSPORTS)}"
            )
        self._backend = backend or os.environ.get("PYTRITON_TORCH_BACKEND", "python")
        if self._backend not in BACKENDS:
            raise PyTritonTorchValidationError(
                f"backend={self._backend!r} is not supported; expected one of {', '.join(BACKENDS)}"
            )
        if self._backend == "native" and self._channel != "unix":
            if backend is not None:
                raise PyTritonTorchValidationError(
                    f"backend='native' speaks the 'unix' channel only; channel={self._channel!r} needs "
                    "backend='python'"
                )
            LOGGER.warning(
                "PYTRITON_TORCH_BACKEND=native is not used: the %r channel needs the Python backend",
                self._channel,
            )
            self._backend = "python"
        self._spin_us = float(os.environ.get("PYTRITON_TORCH_CHANNEL_SPIN_US", channel_spin_us))
        self._config = (config or TritonConfig()).merged_over(TritonConfig.from_env())
        check_root_length(workspace)
        self._workspace_path = workspace
        self._connect_timeout_s = connect_timeout_s
        self._models: dict[str, BoundModel] = {}
        self._lock = threading.RLock()
        self._started = False
        self._stopped = False
        self._stop_requested = threading.Event()
        self._failure: str | None = None
        self._token = secrets.token_hex(16)
        self._shm_prefix = f"ptt-{os.getpid()}-{secrets.token_hex(8)}"
        self._workspace: Workspace | None = None
        self._process: TritonProcess | None = None
        self._zmq: zmq.Context[Any] | None = None
        self._loop = EventLoopThread()
        self._drained = False
        self._loaded: set[str] = set()  # models whose load succeeded (candidates for a reload)
        self._reloading: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Triton:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def config(self) -> TritonConfig:
        """The effective configuration (code over environment)."""
        return self._config

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP endpoint (``http://127.0.0.1:8000``)."""
        return (
            f"http://{_connectable(self._config.effective_http_address)}:{self._config.effective_http_port}"
        )

    @property
    def grpc_url(self) -> str:
        """URL of the gRPC endpoint (``grpc://127.0.0.1:8001``)."""
        return (
            f"grpc://{_connectable(self._config.effective_grpc_address)}:{self._config.effective_grpc_port}"
        )

    @property
    def metrics_url(self) -> str:
        """URL of the Prometheus metrics page."""
        address = _connectable(self._config.effective_metrics_address)
        return f"http://{address}:{self._config.effective_metrics_port}/metrics"

    @property
    def workspace(self) -> Workspace | None:
        """The private folder of the running server (None before start)."""
        return self._workspace

    def _start(self) -> None:
        try:
            self._start_server()
        except BaseException:
            self._abandon_start()
            raise

    def _abandon_start(self) -> None:
        """After a failed start: remove what it made; the caller is told by the exception."""
        _UNREPORTED.discard(id(self))
        if self._started:
            return  # stop() already ran and removed everything
        if self._workspace is not None:
            self._workspace.remove()
        if self._zmq is not None:
            self._zmq.term()

    def _start_server(self) -> None:
        with self._lock:
            if self._stopped:
                raise PyTritonTorchInvalidOperationError(
                    "this Triton was stopped; create a new one to serve again"
                )
            if self._started:
                return
            remove_stale_segments()
            remove_stale_workspaces()
            dist = find_dist()
            check_startable(self._config, server_flags(dist, TritonProcess.environment(dist)))
            check_ports_free(self._config.ports())
            self._workspace = Workspace(self._workspace_path)
            try:
                library = str(preload_library(self._workspace.root))
                if self._backend == "native":
                    self._workspace.link_native_backend(backend_library(self._workspace.root))
            except BaseException:
                self._workspace.remove()
                raise
            self._workspace.link_backend(dist)
            (self._workspace.root / "syspath.json").write_text(json.dumps([p for p in sys.path if p]))
            self._zmq = zmq.Context()
            secrets = Secrets()
            args = self._server_args(dist, secrets)
            env = TritonProcess.environment(dist)
            env.update(secrets.environment())
            # Stubs inherit the library: it keeps their shared memory private and ends orphans.
            env["LD_PRELOAD"] = ":".join(filter(None, (library, env.get("LD_PRELOAD"))))
            self._process = TritonProcess(
                dist,
                args,
                env,
                echo=bool(self._config.log_verbose),
                on_exit=self._on_server_exit,
            )
            self._started = True
            atexit.register(self.stop)
            try:
                self._process.start()
                self._process.wait_live(self._admin_url, self._config.startup_timeout_s or 120.0)
                self._check_admin_token()
                self._warn_if_verbose()
                for model in list(self._models.values()):
                    self._load_at_start(model)
            except BaseException:
                self.stop()
                raise
            LOGGER.info("Triton started: HTTP %s, gRPC %s", self.http_url, self.grpc_url)

    @property
    def _admin_url(self) -> str:
        if self._config.allow_http is False:
            raise PyTritonTorchInvalidOperationError(
                "pytriton_torch needs the HTTP endpoint (allow_http=False)"
            )
        return self.http_url

    def _check_admin_token(self) -> None:
        """The server took the real token (not its placeholder): the preload library did its job."""
        try:
            self._admin_post("/v2/repository/index", timeout_s=30)
        except urllib.error.HTTPError as exc:
            assert self._process is not None
            raise PyTritonTorchServerError(
                f"tritonserver refused the admin token ({exc.code}): the preload library that puts the token "
                f"in place was not active (LD_PRELOAD). Last log lines:\n{self._process.logs(last=40)}"
            ) from None

    def _warn_if_verbose(self) -> None:
        """Say once that the server logs verbosely (the level it reports, else the configured one)."""
        level = self._config.log_verbose or 0
        with contextlib.suppress(urllib.error.URLError, OSError, ValueError, TypeError, KeyError):
            level = int(json.loads(self._admin_post("/v2/logging", timeout_s=10))["log_verbose_level"])
        if level > 0:
            LOGGER.warning(
                "tritonserver logs verbosely (log_verbose_level=%d): every request is logged, which "
                "can slow inference down; leave TritonConfig.log_verbose unset or 0 in production",
                level,
            )

    def _server_args(self, dist: TritonDist, secrets: Secrets) -> list[str]:
        """The command line; every token on it is a placeholder (``secrets`` holds the values)."""
        assert self._workspace is not None
        config = self._config
        args = [
            f"--model-repository={self._workspace.models}",
            f"--backend-directory={self._workspace.backends}",
            "--model-control-mode=explicit",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}-tb",
            f"--backend-config=python,shm-default-byte-size={_PYTHON_BACKEND_SHM_DEFAULT}",
            f"--backend-config=python,shm-growth-byte-size={_PYTHON_BACKEND_SHM_GROWTH}",
        ]
        if config.model_repository is not None:
            args += [f"--model-repository={config.model_repository}", "--load-model=*"]
        if config.cache_directory is None:
            args.append(f"--cache-directory={dist.caches}")
        # A rule given in TritonConfig governs the APIs it names; ours covers the rest.
        for flag, rule in (
            ("--http-restricted-api", config.http_restricted_api),
            ("--grpc-restricted-protocol", config.grpc_restricted_protocol),
        ):
            ours = [api for api in RESTRICTED_APIS if api not in _rule_apis(rule)]
            if ours:
                args.append(f"{flag}={','.join(ours)}:{ADMIN_HEADER}={secrets.hide(self._token)}")
        if config.allow_gpu_metrics is None:
            args.append("--allow-gpu-metrics=false")
        return args + [_hide_rule_value(arg, secrets) for arg in config.to_args()]

    def run(self) -> None:
        """Start the server (if not started) and return; it serves in the background until :meth:`stop`.

        If tritonserver dies while serving in the background, the error is logged at once, later
        calls (``bind``, ``serve``) raise it, ``is_alive()`` answers False, and unless one of those
        told the program, the interpreter's exit status becomes 1 so that a supervisor sees it.
        """
        self._start()

    def serve(self, monitoring_period_s: float = 1.0) -> None:
        """Start the server (if not started) and block until SIGINT/SIGTERM or :meth:`stop`.

        Raises PyTritonTorchServerError when the server stopped on its own (crash, unrecoverable
        model error), so a script ends with a non-zero status.
        """
        self._start()
        restore = self._install_signal_handlers()
        try:
            while not self._stop_requested.wait(monitoring_period_s):
                pass
        finally:
            for signum, handler in restore.items():
                signal.signal(signum, handler)
            self.stop()
        if self._failure is not None:
            _UNREPORTED.discard(id(self))
            raise PyTritonTorchServerError(self._failure)

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}  # only the main thread may set handlers; stop() ends serve() from elsewhere

        def handler(signum: int, frame: types.FrameType | None) -> None:
            LOGGER.info("received %s, stopping", signal.Signals(signum).name)
            self._stop_requested.set()

        return {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}

    def is_alive(self) -> bool:
        """Whether the server process runs and answers as live.

        A False answer after the server died counts as telling the caller (see :meth:`run`).
        """
        if self._failure is not None:
            _UNREPORTED.discard(id(self))
        if self._process is None or not self._process.is_alive():
            return False
        try:
            with urllib.request.urlopen(f"{self._admin_url}/v2/health/live", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> bool:
        """Stop the server and the workers, remove the workspace and shared memory. Idempotent."""
        with self._lock:
            if self._stopped or not self._started:
                self._stopped = self._stopped or self._started
                return False
            self._stopped = True
        self._stop_requested.set()
        atexit.unregister(self.stop)
        exit_timeout = float(
            self._config.exit_timeout_secs if self._config.exit_timeout_secs is not None else 30
        )
        # One deadline for the whole shutdown: draining and tritonserver's own exit share it, then
        # tritonserver gets _KILL_GRACE_S more before it is killed (what it still runs is abandoned).
        deadline = time.monotonic() + exit_timeout
        if self._process is not None:
            if self._process.is_alive():
                # Open streams get most of the exit timeout to finish, then they are cancelled.
                settler = StreamSettler(list(self._models.values()), grace_period(exit_timeout))
                # Draining through unload first: tritonserver's own shutdown would otherwise wait the
                # whole exit timeout for idle keep-alive client connections to go away.
                self._unload_all(timeout_s=exit_timeout)
                settler.join(timeout=max(0.0, deadline - time.monotonic()))
            remaining = max(0.0, deadline - time.monotonic())
            self._process.stop(
                timeout_s=2.0 if self._drained else remaining + _KILL_GRACE_S, drained=self._drained
            )
        for model in self._models.values():
            model.stop_workers()
        if self._zmq is not None:
            terminator = threading.Thread(target=self._zmq.term, daemon=True)
            terminator.start()
            terminator.join(timeout=5)
        self._loop.stop()
        remove_segments(self._shm_prefix)
        if self._workspace is not None:
            self._workspace.remove()
        LOGGER.info("Triton stopped")
        return True

    def _admin_post(self, path: str, body: bytes = b"{}", timeout_s: float = 60.0) -> bytes:
        request = urllib.request.Request(
            f"{self._admin_url}{path}",
            data=body,
            method="POST",
            headers={
                ADMIN_HEADER: self._token,
                **self._user_repository_header(),
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return bytes(response.read())

    def _user_repository_header(self) -> dict[str, str]:
        """The header of a user's HTTP rule that restricts the repository API (we must pass it too)."""
        rule = self._config.http_restricted_api
        if "model-repository" not in _rule_apis(rule) or not rule or "=" not in rule:
            return {}
        key, value = rule.split(":", 1)[1].split("=", 1)
        return {key.strip(): value}

    def _unload_all(self, timeout_s: float) -> None:
        """Unload every model; tritonserver finishes their in-flight requests first."""
        deadline = time.monotonic() + timeout_s

        def left(cap: float) -> float:
            return max(0.1, min(cap, deadline - time.monotonic()))

        busy: list[str] = []
        try:
            index = json.loads(
                self._admin_post("/v2/repository/index", b'{"ready": true}', timeout_s=left(5))
            )
            names = sorted({entry["name"] for entry in index})
            for name in names:
                self._admin_post(f"/v2/repository/models/{name}/unload", timeout_s=left(timeout_s))
            held_since: float | None = None
            while time.monotonic() < deadline:
                index = json.loads(self._admin_post("/v2/repository/index", timeout_s=left(5)))
                busy = sorted(
                    entry["name"]
                    for entry in index
                    if entry.get("state") in ("READY", "UNLOADING", "LOADING")
                )
                if not busy:
                    self._drained = True
                    return
                if self._held_by_idle_streams(busy, index):
                    held_since = time.monotonic() if held_since is None else held_since
                    if time.monotonic() - held_since > 1.0:
                        # tritonserver 2.51 keeps a streaming model UNLOADING while any client gRPC
                        # stream stays open, even with no request on it; nothing is in flight.
                        LOGGER.info(
                            "shutdown: model(s) %s have no stream in flight but idle client gRPC "
                            "streams keep them unloading; they end with the server",
                            ", ".join(busy),
                        )
                        self._drained = True
                        return
                else:
                    held_since = None
                time.sleep(0.05)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            LOGGER.debug("could not drain models before stopping: %s", exc)
            return
        LOGGER.warning(
            "exit timeout (%gs) reached before every model finished its requests%s; stopping "
            "tritonserver anyway: requests still in flight fail, infer calls still running are abandoned",
            timeout_s,
            f" (still busy: {', '.join(busy)})" if busy else "",
        )

    def _held_by_idle_streams(self, busy: list[str], index: list[dict[str, Any]]) -> bool:
        """Whether only streaming models with no open stream are left unloading."""
        models = [self._models.get(name) for name in busy]
        if not all(model is not None and model.info.decoupled for model in models):
            return False
        if any(entry.get("state") != "UNLOADING" for entry in index if entry["name"] in busy):
            return False
        return open_streams([model for model in models if model is not None]) == 0

    def _on_server_exit(self, code: int) -> None:
        # Marked unreported before the failure is visible: whoever sees ``_failure`` (is_alive,
        # bind, serve) and discards the mark must find it there, or it would be added after.
        _UNREPORTED.add(id(self))
        if self._failure is None:
            tail = self._process.logs(last=20) if self._process is not None else ""
            self._failure = f"tritonserver exited unexpectedly with code {code}. Last log lines:\n{tail}"
        LOGGER.error("%s", self._failure)
        self._stop_requested.set()

    def _on_fatal(self, message: str) -> None:
        _UNREPORTED.add(id(self))  # before the failure is visible (see _on_server_exit)
        self._failure = f"{message}; the server stopped and must be restarted"
        LOGGER.critical("%s", self._failure)
        self._stop_requested.set()
        if self._process is not None:
            threading.Thread(target=self._process.stop, args=(10.0,), daemon=True).start()

    def _on_stub_lost(self, model_name: str) -> None:
        """A stub dropped its connection unannounced (killed or crashed): reload the model.

        Triton's Python backend (2.51) does not restart a dead stub; it fails every later request
        of that instance with "Stub process is not healthy". A reload starts new stubs, which
        connect to the same worker threads. Called from a worker thread, so the reload runs apart.
        """
        with self._lock:
            if self._stop_requested.is_set() or model_name not in self._loaded:
                return
            if model_name in self._reloading:
                return
            self._reloading.add(model_name)
        threading.Thread(target=self._reload, args=(model_name,), daemon=True).start()

    def _reload(self, model_name: str) -> None:
        LOGGER.warning("model %r: a stub process exited unexpectedly; reloading the model", model_name)
        try:
            self._admin_post(
                f"/v2/repository/models/{model_name}/load", timeout_s=self._connect_timeout_s + 60
            )
            LOGGER.info("model %r reloaded", model_name)
        except (urllib.error.URLError, OSError) as exc:
            if not self._stop_requested.is_set():
                LOGGER.error("model %r: reload failed: %s", model_name, exc)
        finally:
            with self._lock:
                self._reloading.discard(model_name)

    # -- models ----------------------------------------------------------------------------------

    def bind(
        self,
        model_name: str,
        infer_func: Callable[..., Any] | Sequence[Callable[..., Any]],
        inputs: Sequence[Tensor],
        outputs: Sequence[Tensor],
        model_version: int = 1,
        config: ModelConfig | None = None,
        strict: bool = False,
        trace_config: list[str] | None = None,
        *,
        tensors: str = "numpy",
        device: Any = None,
    ) -> None:
        """Serve ``infer_func`` as model ``model_name``.

        Args:
            model_name: Name clients use in ``/v2/models/<name>/infer``.
            infer_func: A callable, or a list of callables: one model instance each, run concurrently.
                It receives ``list[Request]`` (use ``@batch`` for keyword arrays) and returns one dict of
                outputs per request; generators (sync or async) make a streaming (decoupled) model.
            inputs: Input tensor specs (names, dtypes, per-sample shapes).
            outputs: Output tensor specs.
            model_version: Version number in the model store.
            config: Batching and scheduling options (default ``ModelConfig()``).
            strict: Check every output's dtype and shape against ``outputs``; otherwise only names and
                batch size are checked and dtypes are converted when numpy can do it safely.
            trace_config: Must stay ``None``: PyTriton's per-model OpenTelemetry spans around the
                infer call are not implemented, so a value is refused rather than ignored. Triton's
                own tracing is configured for the server with ``TritonConfig.trace_config``.
            tensors: ``"numpy"`` (default, as PyTriton) or ``"torch"``: inputs arrive as torch tensors
                on ``device`` (zero-copy views of the request buffers on CPU; non-blocking copies from
                page-locked memory on CUDA) and outputs may be torch tensors on any device. Works with
                every decorator (``@batch`` concatenates with ``torch.cat``). BF16 tensors arrive as
                ``torch.bfloat16`` (as ``ml_dtypes.bfloat16`` arrays with ``"numpy"``).
            device: With ``tensors="torch"``: ``"cpu"`` (default), ``"cuda:N"``, ``"auto"``, a
                :class:`~pytriton_torch.model_config.DeviceKind`, or a list with one device per callable. Each instance runs on its own CUDA stream.

        Example::

            @batch
            def infer(x):  # x: torch.Tensor on cuda:0
                return {"y": model(x)}

            triton.bind("net", infer, inputs=[...], outputs=[...], tensors="torch", device="cuda:0")

        The call returns once the model is loaded and every instance is connected: requests sent
        afterwards never see 'unknown model'.
        """
        if trace_config is not None:
            raise PyTritonTorchValidationError(
                f"model {model_name!r}: bind(trace_config={trace_config!r}) is not supported: pytriton_torch "
                "makes no OpenTelemetry spans around infer calls; configure Triton's tracing for the server "
                "with TritonConfig(trace_config=[...]) and leave bind's trace_config unset"
            )
        fns: list[Callable[..., Any]] = (
            list(infer_func) if isinstance(infer_func, list | tuple) else [infer_func]  # type: ignore[list-item]
        )
        model_config = config or ModelConfig()
        if model_config.decoupled is False and any(_is_generator(fn) for fn in fns):
            model_config = _replace_decoupled(model_config)
        if tensors == "torch":
            fns = _torch_callables(model_name, fns, device)
        elif tensors != "numpy":
            raise PyTritonTorchValidationError(
                f"model {model_name!r}: tensors={tensors!r} is not supported; expected 'numpy' or 'torch'"
            )
        elif device is not None:
            raise PyTritonTorchValidationError(
                f"model {model_name!r}: device={device!r} needs tensors='torch' (numpy arrays live on the host)"
            )
        model = BoundModel(
            model_name,
            fns,
            _default_names(inputs, "INPUT"),
            _default_names(outputs, "OUTPUT"),
            model_config,
            version=model_version,
            strict=strict,
        )
        self._bind_model(model)

    def bind_module(
        self,
        model_name: str,
        module: Any,
        *,
        example_inputs: Any,
        method: str = "forward",
        inputs: Sequence[Tensor] | None = None,
        outputs: Sequence[Tensor] | None = None,
        device: Any = "auto",
        instances: int = 1,
        config: ModelConfig | None = None,
        dynamic_axes: dict[str, Sequence[int]] | None = None,
        autocast: Any = None,
        inference_mode: bool = True,
        compile: bool = False,
        compile_options: dict[str, Any] | None = None,
        warmup_runs: int = 1,
        strict: bool = False,
        cuda_graphs: bool | Sequence[int] = False,
        memory_format: str = "auto",
    ) -> list[Any]:
        """Serve a ``torch.nn.Module`` (eager, TorchScript, compiled or ``torch.export``-ed) in one call.

        Input names come from the served method's signature, dtypes and per-sample shapes from
        ``example_inputs`` (dim 0 is the batch axis when batching); outputs from one example call:
        a Tensor is ``OUTPUT__0``, a tuple/list gives ``OUTPUT__<i>``, a dict keeps its keys. Explicit
        ``inputs``/``outputs`` override what was derived. The example call and ``warmup_runs`` per
        instance (and ``torch.compile``) happen before the model is loaded, so it is ready warm.

        Example::

            net = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU())
            triton.bind_module("mlp", net, example_inputs=torch.zeros(1, 16), instances=2)

        Args:
            model_name: Served name.
            module: The module (or any object with ``method``).
            example_inputs: A Tensor, a tuple of Tensors (positional) or a dict name -> Tensor.
            method: Method to serve (``forward`` by default).
            inputs: Explicit input specs (override the derived ones).
            outputs: Explicit output specs; given under other names they rename outputs in order.
            device: ``"auto"`` (cuda if available, else cpu), a device or DeviceKind, or a list of
                devices that instances are spread over.
            instances: Model instances; those on one device share one copy of the weights.
            config: Batching options (default ``ModelConfig(max_batch_size=64)``).
            dynamic_axes: Input name -> axes (of the example, batch axis = 0) that vary; also marks
                outputs' dims variable.
            autocast: ``"float16"``/``"bfloat16"`` (or a torch dtype) to run under autocast.
            inference_mode: Run under ``torch.inference_mode()`` (default) or only no_grad-free.
            compile: Wrap the method in ``torch.compile``.
            compile_options: Keyword arguments for ``torch.compile``.
            warmup_runs: Example calls per instance before the model goes live.
            strict: Check outputs against the specs on every call.
            cuda_graphs: On CUDA: capture a CUDA graph per batch size (``True``: the batcher's
                preferred sizes, else powers of two up to ``max_batch_size``; or a list of sizes).
                A batch is padded up to the next captured size and replayed; larger ones run eagerly.
            memory_format: ``"auto"`` (default): a module with 2-D convolutions and 4-D float
                inputs runs channels-last (NHWC; its weights are converted in place), once the
                example call shows it works and gives the same answer; otherwise the default
                layout is kept with a warning. ``"channels_last"`` insists (an error if it fails);
                ``"contiguous"`` leaves the module and inputs as they are.

        Returns:
            The instance runners (one per instance), e.g. to inspect their devices.
        """
        from ._torch._bind import bind_module

        return bind_module(
            self,
            model_name,
            module,
            example_inputs=example_inputs,
            method=method,
            inputs=inputs,
            outputs=outputs,
            device=device,
            instances=instances,
            config=config,
            dynamic_axes=dynamic_axes,
            autocast=autocast,
            inference_mode=inference_mode,
            compile=compile,
            compile_options=compile_options,
            warmup_runs=warmup_runs,
            strict=strict,
            cuda_graphs=cuda_graphs,
            memory_format=memory_format,
        )

    def load_repository(
        self,
        path: str | os.PathLike[str],
        *,
        models: Sequence[str] | None = None,
        on_event: Callable[[str, str, str], None] | None = None,
        allow_pickle: bool = False,
    ) -> RepositoryReport:
        """Serve the PyTorch models of a Triton model repository (``<repo>/<model>/config.pbtxt``).

        TorchScript (``platform: "pytorch_libtorch"`` / ``backend: "pytorch"``), Python models
        (``model.py`` + ``model.py.pt`` with ``backend: "python"``, ``platform: "pytorch"``) and
        ``.pt2`` files (``platform: "torch_aoti"``, or ``torch.export.save`` programs) run in this
        process; see docs/repository.md. A model that fails is reported and the others still serve.
        Works before and after the server started.

        Example::

            with Triton() as triton:
                report = triton.load_repository("model_repository")
                print(report.loaded, report.failed)
                triton.serve()

        Args:
            path: The model repository folder.
            models: Only these models (default: every folder).
            on_event: Called as ``on_event(model, stage, detail)`` with stage ``parse``, ``load``,
                ``warmup``, ``ready`` or ``failed``.
            allow_pickle: Read weights with full unpickling (runs code stored in the file; logs a
                warning). Default: ``torch.load(weights_only=True)``.
        """
        from ._repository._loader import load_repository

        return load_repository(self, path, models=models, on_event=on_event, allow_pickle=allow_pickle)

    def _bind_model(self, model: BoundModel) -> None:
        """Register a prepared bound model and load it when the server runs.

        The one registration path of ``bind``, ``bind_module`` and repository models: a load that
        fails leaves nothing behind (workers, sockets, model folder, shared memory).
        """
        with self._lock:
            if self._stopped:
                raise PyTritonTorchInvalidOperationError(
                    f"cannot bind {model.name!r}: this Triton was stopped"
                )
            if model.name in self._models:
                raise PyTritonTorchInvalidOperationError(f"model {model.name!r} is already bound")
            self._models[model.name] = model
            if self._started:
                try:
                    self._load(model)
                except BaseException:
                    self._discard(model)
                    raise

    def _load_at_start(self, model: BoundModel) -> None:
        """Load a model bound before start; repository models that fail are reported, not fatal."""
        on_load_error = model.on_load_error
        try:
            self._load(model)
        except (PyTritonTorchModelError, PyTritonTorchValidationError) as exc:  # e.g. a bad warm-up sample
            if on_load_error is None:
                raise
            self._discard(model)
            on_load_error(exc.message)

    def _discard(self, model: BoundModel) -> None:
        """Undo everything a failed load of ``model`` made on our side."""
        model.stop_workers()
        model.join_workers(timeout_s=2.0)  # idle threads release their sockets at once
        self._models.pop(model.name, None)
        self._loaded.discard(model.name)
        if self._workspace is not None:
            shutil.rmtree(self._workspace.models / model.name, ignore_errors=True)

    def _load(self, model: BoundModel) -> None:
        assert self._workspace is not None and self._zmq is not None
        if self._failure is not None:  # run() users learn here that the server is gone
            _UNREPORTED.discard(id(self))
            raise PyTritonTorchServerError(f"cannot load model {model.name!r}: {self._failure}")
        model.warm_up(self._loop)
        model.backend = "native" if self._backend == "native" and model.native_capable() else "python"
        model.write(
            self._workspace,
            self._shm_prefix,
            os.getpid(),
            self._connect_timeout_s,
            self._channel,
            self._spin_us,
        )
        model.start_workers(
            self._workspace,
            self._shm_prefix,
            self._channel,
            self._zmq,
            self._loop,
            self._on_fatal,
            self._on_stub_lost,
        )
        try:
            self._admin_post(
                f"/v2/repository/models/{model.name}/load", timeout_s=self._connect_timeout_s + 60
            )
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError):
                detail = json.loads(detail).get("error", detail)
            raise PyTritonTorchModelError(f"model {model.name!r} failed to load: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise PyTritonTorchServerError(
                f"model {model.name!r}: cannot reach tritonserver: {exc}"
            ) from None
        self._loaded.add(model.name)
        LOGGER.info("model %r ready (%d instance(s))", model.name, len(model.infer_fns))


def _default_names(tensors: Sequence[Tensor], prefix: str) -> list[Tensor]:
    """Name unnamed tensors ``<prefix>_1``, ``<prefix>_2``, ... by position, as PyTriton does."""
    return [
        tensor if tensor.name else dataclasses.replace(tensor, name=f"{prefix}_{index}")
        for index, tensor in enumerate(tensors, start=1)
    ]


def _torch_callables(model_name: str, fns: list[Callable[..., Any]], device: Any) -> list[Callable[..., Any]]:
    from ._torch._adapter import TorchInfer, resolve_devices

    devices = resolve_devices(device, len(fns), f"model {model_name!r}: ")
    return [
        fn if isinstance(fn, TorchInfer) else TorchInfer(fn, dev, model_name=model_name)
        for fn, dev in zip(fns, devices, strict=True)
    ]


def _hide_rule_value(arg: str, secrets: Secrets) -> str:
    """A user's restriction rule ``--<flag>=<apis>:<header>=<value>`` with its value as a placeholder."""
    flag, _, rule = arg.partition("=")
    if flag not in ("--http-restricted-api", "--grpc-restricted-protocol") or ":" not in rule:
        return arg
    apis, _, header = rule.partition(":")
    key, equals, value = header.partition("=")
    return f"{flag}={apis}:{key}={secrets.hide(value)}" if equals else arg


def _rule_apis(rule: str | None) -> set[str]:
    """API names restricted by a Triton rule ``<api>,<api>:<header>=<value>``."""
    return set() if not rule else {api.strip() for api in rule.split(":", 1)[0].split(",")}


def _connectable(address: str) -> str:
    return "127.0.0.1" if address in ("0.0.0.0", "") else ("[::1]" if address == "::" else address)


def _is_generator(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` (a function, method or callable object, maybe decorated) makes a stream."""
    inner: Any = fn
    while hasattr(inner, "__wrapped__"):
        inner = inner.__wrapped__
    if not (inspect.isfunction(inner) or inspect.ismethod(inner)):
        inner = type(inner).__call__
    return inspect.isgeneratorfunction(inner) or inspect.isasyncgenfunction(inner)


def _replace_decoupled(config: ModelConfig) -> ModelConfig:
    LOGGER.info("generator infer function: serving the model as decoupled (streaming)")
    return dataclasses.replace(config, decoupled=True)


__all__ = ["Triton", "TritonConfig"]
