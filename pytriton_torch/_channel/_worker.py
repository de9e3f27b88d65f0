"""User-process side of the channel: one thread per model instance serving its socket.

The thread that receives a batch also runs the infer function, so no hand-off between threads
sits on the request path. Coroutines and async generators run on one shared event-loop thread.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .._context import ModelInfo
from .._types import Request
from ..exceptions import PyTritonTorchError, PyTritonTorchUnrecoverableError
from . import _protocol as proto
from ._codec import Packer, unpack
from ._shm import ShmReader, ShmWriter, pid_alive
from ._transport import ChannelClosed, ServerEndpoint
from ._validate import check_responses

LOGGER = logging.getLogger("pytriton_torch.worker")


class EventLoopThread:
    """One asyncio loop in a daemon thread, shared by all async infer functions of a server."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._loop.run_forever, name="pytriton_torch-asyncio", daemon=True
                ).start()
            return self._loop

    def run(self, awaitable: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(awaitable, self.loop).result()

    def iterate(self, agen: Any) -> Iterator[Any]:
        while True:
            try:
                yield self.run(agen.__anext__())
            except StopAsyncIteration:
                return

    def stop(self) -> None:
        with self._lock:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._loop = None


class InstanceWorker:
    """Serves one model instance: receives batches from its proxy, runs ``infer_fn``, answers.

    ``on_fatal`` is called when the function raises PyTritonTorchUnrecoverableError.
    """

    def __init__(
        self,
        *,
        info: ModelInfo,
        index: int,
        infer_fn: Callable[..., Any],
        endpoint: ServerEndpoint,
        shm_prefix: str,
        loop: EventLoopThread,
        strict: bool,
        on_fatal: Callable[[str], None],
        reader: ShmReader | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.info = info
        self.index = index
        self._fn = infer_fn
        self._strict = strict
        self._loop = loop
        self._on_fatal = on_fatal
        self._sock = endpoint
        self._packer = Packer(ShmWriter(f"{shm_prefix}-{index}-rsp"))
        self._reader = reader or ShmReader()
        self.connected = threading.Event()
        self._pending: tuple[Any, list[Any]] | None = None  # a message that ended a stream early
        # A call stuck past the model's timeout cannot be interrupted (it is a Python thread), so
        # the instance is served by a new thread instead: each serving thread has a generation,
        # and only the current one may answer or touch the socket and segments.
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._generation = 0
        self._busy_since: float | None = None
        self._closed = threading.Event()
        self._thread = self._start_thread()
        if timeout_s:
            threading.Thread(
                target=self._watch, name=f"pytriton_torch-{info.model_name}-{index}-watchdog", daemon=True
            ).start()

    def _start_thread(self) -> threading.Thread:
        generation = self._generation
        thread = threading.Thread(
            target=self._serve,
            args=(generation,),
            name=f"pytriton_torch-{self.info.model_name}-{self.index}"
            + (f"-{generation}" if generation else ""),
            daemon=True,
        )
        thread.start()
        return thread

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def close(self) -> None:
        """Ask the thread to finish (returns at once; a running infer call completes first)."""
        self._closed.set()
        self._sock.close()

    def _current(self, generation: int) -> bool:
        return generation == self._generation

    def _watch_stub(self, pid: int | None) -> None:
        """Zmq only: a ROUTER socket does not see its peer vanish, so watch the stub's pid instead.

        The Unix transport sees the connection close and reports a lost stub itself.
        """
        if self._sock.kind != "zmq" or not pid:
            return

        def watch() -> None:
            while not self._closed.wait(0.5):
                if not pid_alive(pid):
                    LOGGER.warning(
                        "model %r instance %d: its stub (pid %d) exited",
                        self.info.model_name,
                        self.index,
                        pid,
                    )
                    self._sock.peer_lost()
                    return

        threading.Thread(
            target=watch, name=f"pytriton_torch-{self.info.model_name}-{self.index}-stub", daemon=True
        ).start()

    def _watch(self) -> None:
        """Replace the serving thread when a call has run well past the model's timeout."""
        assert self._timeout_s is not None
        limit = self._timeout_s + 1.0  # the proxy has failed the request by then
        while not self._closed.wait(min(0.5, self._timeout_s / 2)):
            with self._lock:
                since = self._busy_since
                if since is None or time.monotonic() - since < limit:
                    continue
                LOGGER.warning(
                    "model %r instance %d: the infer function has run for %.1f s (timeout_s=%g); later "
                    "requests are served by a new thread and the stuck call's result will be dropped",
                    self.info.model_name,
                    self.index,
                    time.monotonic() - since,
                    self._timeout_s,
                )
                self._generation += 1
                self._busy_since = None
                self._thread = self._start_thread()

    def _serve(self, generation: int = 0) -> None:
        try:
            while self._current(generation):
                if self._pending is not None:
                    (peer, (header_frame, *frames)), self._pending = self._pending, None
                else:
                    peer, (header_frame, *frames) = self._sock.recv()
                header = proto.loads(header_frame)
                kind = header["t"]
                if kind == proto.INFER:
                    self._busy_since = time.monotonic()
                    self._infer(peer, header, frames, generation)
                    with self._lock:
                        if self._current(generation):
                            self._busy_since = None
                elif kind == proto.HELLO:
                    self._sock.send(peer, [proto.dumps({"t": proto.WELCOME, "id": header["id"]})])
                    self._watch_stub(header.get("pid"))
                    self.connected.set()
        except ChannelClosed:
            return
        finally:
            if self._current(generation):  # a replaced thread leaves the channel to its successor
                self._sock.release()
                self._packer.close()
                self._reader.close()

    def _requests(self, header: dict[str, Any], frames: list[Any]) -> list[Request]:
        segment = header["seg"]
        requests = []
        for descriptors, (params, wanted, request_id) in zip(header["reqs"], header["meta"], strict=True):
            parameters = json.loads(params) if params and params != "{}" else {}
            data = unpack(descriptors, frames, segment, self._reader)
            requests.append(Request(data, parameters, list(wanted) if wanted else None, request_id or ""))
        return requests

    def _infer(self, ident: Any, header: dict[str, Any], frames: list[Any], generation: int = 0) -> None:
        call_id = header["id"]
        requests: list[Request] = []
        try:
            requests = self._requests(header, frames)
            started = time.perf_counter_ns()
            result = self._fn(requests)
            if self.info.decoupled:
                self._stream(ident, call_id, requests, result, generation)
                return
            if type(result) is not list and inspect.isawaitable(result):
                result = self._loop.run(result)
            function_ns = time.perf_counter_ns() - started  # the proxy's hop metric leaves it out
            responses = check_responses(self.info, requests, result, strict=self._strict)
            self._send(ident, proto.OK, call_id, responses, function_ns, generation)
        except ChannelClosed:
            raise
        except Exception as exc:
            self._send_error(ident, call_id, exc, requests, generation)

    def _stream(
        self, ident: Any, call_id: int, requests: list[Request], result: Any, generation: int = 0
    ) -> None:
        if inspect.isasyncgen(result):
            chunks: Iterator[Any] = self._loop.iterate(result)
        elif inspect.isgenerator(result) or isinstance(result, Iterator):
            chunks = result
        else:  # a plain function bound to a decoupled model answers once
            if inspect.isawaitable(result):
                result = self._loop.run(result)
            chunks = iter([result])
        for chunk in chunks:
            if not self._current(generation):  # replaced while the generator was stuck
                if inspect.isgenerator(chunks):
                    chunks.close()
                return
            self._send(
                ident, proto.PART, call_id, check_responses(self.info, requests, chunk, strict=self._strict)
            )
            acked = self._wait_ack(call_id)
            self._busy_since = time.monotonic()  # progress: the watchdog measures time per chunk
            if not acked:
                if inspect.isgenerator(chunks):
                    chunks.close()
                return
        with self._lock:
            if self._current(generation):
                self._sock.send(ident, [proto.dumps({"t": proto.END, "id": call_id})])

    def _wait_ack(self, call_id: int) -> bool:
        """Wait until the proxy took the chunk; False when something else came first.

        A new call or a handshake (a restarted stub) means the proxy gave up on this stream
        (timeout); the serve loop handles that message next.
        """
        while True:
            peer, message = self._sock.recv()
            header = proto.loads(message[0])
            if header["t"] == proto.ACK and header["id"] == call_id:
                return True
            if header["t"] in (proto.INFER, proto.HELLO):
                self._pending = (peer, message)
                return False

    def _send(
        self,
        ident: Any,
        kind: str,
        call_id: int,
        responses: list[dict[str, Any]],
        function_ns: int = 0,
        generation: int | None = None,
    ) -> None:
        with self._lock:
            if generation is not None and not self._current(generation):
                return  # replaced while the call ran: the proxy already failed this request
            descriptors, frames, segment = self._packer.pack(responses)
            header = {"t": kind, "id": call_id, "resps": descriptors, "seg": segment, "fn": function_ns}
            self._sock.send(ident, [proto.dumps(header), *frames])

    def _send_error(
        self, ident: Any, call_id: int, exc: Exception, requests: list[Request], generation: int | None = None
    ) -> None:
        if generation is not None and not self._current(generation):
            return
        # Our own errors already say what was wrong; others keep their type for the client.
        message = str(exc) if isinstance(exc, PyTritonTorchError) else f"{type(exc).__name__}: {exc}"
        ids = [r.request_id for r in requests if r.request_id]
        LOGGER.error(
            "model %r instance %d: infer function failed%s: %s",
            self.info.model_name,
            self.index,
            f" (request ids: {', '.join(ids)})" if ids else "",
            message,
            exc_info=not isinstance(exc, ValueError | TypeError),
        )
        with self._lock:
            if generation is None or self._current(generation):
                self._sock.send(ident, [proto.dumps({"t": proto.ERR, "id": call_id, "msg": message})])
        if isinstance(exc, PyTritonTorchUnrecoverableError):
            self._on_fatal(f"model {self.info.model_name!r}: {message}")
