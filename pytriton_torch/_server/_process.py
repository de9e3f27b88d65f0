"""Start, watch and stop the tritonserver child process."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence

from ..exceptions import PyTritonTorchPortInUseError, PyTritonTorchServerError
from ._dist import TritonDist, libpython_dir

LOGGER = logging.getLogger("pytriton_torch.server")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: have the kernel send SIGTERM if we (the parent) die."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setpgrp()  # own group: a Ctrl-C in the terminal reaches us only, we then stop it in order


def check_ports_free(endpoints: Mapping[str, tuple[str, int]]) -> None:
    """Raise naming every configured port that another process already listens on."""
    busy = []
    for endpoint, (address, port) in endpoints.items():
        if port == 0:
            continue
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError as exc:
                busy.append(f"{endpoint} port {port} on {address} ({exc.strerror})")
    if busy:
        raise PyTritonTorchPortInUseError(
            "cannot start tritonserver: " + "; ".join(busy) + ". Choose other ports in TritonConfig."
        )


class TritonProcess:
    """One tritonserver child process with its log kept in memory.

    Example::

        process = TritonProcess(dist, args=["--model-repository=/tmp/models"], env=env)
        process.start()
        process.wait_live("http://127.0.0.1:8000", timeout_s=60)
        process.stop(timeout_s=30)
    """

    def __init__(
        self,
        dist: TritonDist,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        echo: bool = False,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        self._dist = dist
        self._args = list(args)
        self._env = dict(env)
        self._echo = echo
        self._on_exit = on_exit
        self._log: collections.deque[str] = collections.deque(maxlen=2000)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._reader: threading.Thread | None = None

    @staticmethod
    def environment(dist: TritonDist, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment tritonserver and its stubs need: this Python's libpython first."""
        env = dict(os.environ if base is None else base)
        paths = [libpython_dir(), str(dist.libs)]
        if env.get("LD_LIBRARY_PATH"):
            paths.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(p for p in paths if p)
        env["PATH"] = os.pathsep.join([str(pathlib.Path(sys.executable).parent), env.get("PATH", "")])
        return env

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def logs(self, last: int | None = None) -> str:
        lines = list(self._log)
        return "".join(lines if last is None else lines[-last:])

    def start(self) -> None:
        """Start the server process and a thread that reads its output.

        PDEATHSIG fires when the forking *thread* ends, so the reader thread forks the server and
        then lives as long as it does.
        """
        started = threading.Event()
        failure: list[BaseException] = []

        def launch_and_read() -> None:
            try:
                cmd = [str(self._dist.server_binary), *self._args]
                LOGGER.debug("starting %s", " ".join(cmd))
                self._proc = subprocess.Popen(
                    cmd,
                    env=self._env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,
                    close_fds=True,
                )
            except BaseException as exc:
                failure.append(exc)
                return
            finally:
                started.set()
            threading.Thread(target=self._watch_exit, name="tritonserver-exit", daemon=True).start()
            self._read_output()

        self._reader = threading.Thread(target=launch_and_read, name="tritonserver", daemon=True)
        self._reader.start()
        started.wait()
        if failure:
            raise PyTritonTorchServerError(f"cannot start {self._dist.server_binary}: {failure[0]}")

    def _read_output(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in iter(self._proc.stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace")
            self._log.append(line)
            if self._echo:
                sys.stderr.write(line)
            else:
                LOGGER.debug("%s", line.rstrip())

    def _watch_exit(self) -> None:
        """Report the server's exit when it happens, not when its output ends, and end its group.

        Its stubs share its process group (``setpgrp`` before exec); one that survived a killed
        server would hang on in a futex wait, keeping the output pipe open.
        """
        assert self._proc is not None
        with contextlib.suppress(ChildProcessError):  # already reaped by a concurrent wait()
            # Seen but not reaped: until the wait below, no other process can get this group id.
            os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOWAIT)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        code = self._proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=1.0)  # the last log lines, when nothing else holds the pipe
        if not self._stopping and self._on_exit is not None:
            self._on_exit(code)

    def wait_live(self, url: str, timeout_s: float) -> None:
        """Block until ``url``/v2/health/live answers 200; raise with the log tail if it never does."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.is_alive():
                raise PyTritonTorchServerError(
                    f"tritonserver exited with code {self.returncode} during start-up. Last log lines:\n"
                    + self.logs(last=40)
                )
            try:
                with urllib.request.urlopen(f"{url}/v2/health/live", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise PyTritonTorchServerError(
            f"tritonserver did not become live within {timeout_s:.0f}s. Last log lines:\n"
            + self.logs(last=40)
        )

    def stop(self, timeout_s: float, *, drained: bool = False) -> int | None:
        """SIGINT, wait up to ``timeout_s``, then SIGKILL. Returns the exit code.

        ``drained``: every model is already unloaded, so a kill after the wait loses nothing.
        """
        self._stopping = True
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log = LOGGER.debug if drained else LOGGER.warning
                log("tritonserver did not stop within %.0fs; killing it", timeout_s)
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        return proc.returncode
