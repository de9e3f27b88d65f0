"""User-process side of the channel: one thread per model instance serving its socket.

The thread that receives a batch also runs the infer function, so no hand-off between threads
sits on the request path. Coroutines and async generators run on one shared event-loop thread.

Streaming (decoupled) models are multiplexed: the serving thread only receives, and each open
stream runs in its own thread, so one instance serves many streams at once. Each stream waits
for the proxy's ``ack`` of a chunk before producing the next one (flow control per stream), and
a ``cancel`` (client gone, stream timed out) closes its generator at its next ``yield``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import sys
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

_ALL_INLINE = sys.maxsize  # stream chunks travel in the message: several streams share one channel


class _OpenStream:
    """Worker side of one open stream: its peer, flow control (``ack``) and cancellation."""

    def __init__(self, call_id: int, peer: Any) -> None:
        self.call_id = call_id
        self.peer = peer
        self.cancelled = threading.Event()
        self._acked = threading.Event()

    def expect_ack(self) -> None:
        self._acked.clear()

    def ack(self) -> None:
        self._acked.set()

    def cancel(self) -> bool:
        """Cancel the stream; False when it already was."""
        if self.cancelled.is_set():
            return False
        self.cancelled.set()
        self._acked.set()
        return True

    def wait_ack(self) -> bool:
        """Wait until the proxy took the last chunk; False when the stream was cancelled meanwhile."""
        self._acked.wait()
        return not self.cancelled.is_set()


async def _guarded(awaitable: Any) -> tuple[Any, BaseException | None]:
    """Await on the loop; a BaseException (SystemExit...) comes back instead of stopping the loop."""
    try:
        return await awaitable, None
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        return None, exc


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
        value, error = asyncio.run_coroutine_threadsafe(_guarded(awaitable), self.loop).result()
        if error is not None:
            raise error
        return value

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
        self._streams: dict[int, _OpenStream] = {}
        self._refusing = ""  # set at shutdown: new streams fail with this reason
        self._stream_packer = Packer(ShmWriter(f"{shm_prefix}-{index}-srsp"), inline_limit=_ALL_INLINE)
        # A call stuck past the model's timeout cannot be interrupted (it is a Python thread), so
        # the instance is served by a new thread instead: each serving thread has a generation,
        # and only the current one may answer or touch the socket and segments.
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._generation = 0
        self._busy_since: float | None = None
        self._closed = threading.Event()
        self._thread = self._start_thread()
        if timeout_s and not info.decoupled:  # streams run in their own threads, never the serving one
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
        """Ask the thread to finish (returns at once; a running infer call completes first).

        Open streams are cancelled: their generators are closed at their next ``yield``.
        """
        self._closed.set()
        self._sock.close()
        self.cancel_streams("the server is stopping")

    def open_streams(self) -> int:
        """How many streams this instance is serving now."""
        with self._lock:
            return len(self._streams)

    def cancel_streams(self, reason: str) -> int:
        """Cancel every open stream (their clients get ``reason`` as the error); returns how many.

        The clients are answered at once, so Triton can release their requests even while a
        generator is still busy before its next ``yield`` (where it is closed).
        """
        with self._lock:
            streams = list(self._streams.values())
        cancelled = [stream for stream in streams if stream.cancel()]
        for stream in cancelled:
            message = f"model {self.info.model_name!r}: stream cancelled: {reason}"
            self._sock.send(
                stream.peer, [proto.dumps({"t": proto.ERR, "id": stream.call_id, "msg": message})]
            )
        return len(cancelled)

    def refuse_streams(self, reason: str) -> int:
        """Cancel every open stream and fail new ones with ``reason`` (shutdown); returns how many."""
        with self._lock:
            self._refusing = reason
        return self.cancel_streams(reason)

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
                peer, (header_frame, *frames) = self._sock.recv()
                try:
                    self._handle(peer, proto.loads(header_frame), frames, generation)
                except ChannelClosed:
                    raise
                except BaseException:  # a bad message must not end the instance
                    LOGGER.exception(
                        "model %r instance %d: could not handle a message from its proxy",
                        self.info.model_name,
                        self.index,
                    )
        except ChannelClosed:
            return
        finally:
            if self._current(generation):  # a replaced thread leaves the channel to its successor
                self.cancel_streams("the server is stopping")
                self._sock.release()
                self._packer.close()
                self._stream_packer.close()
                self._reader.close()

    def _handle(self, peer: Any, header: dict[str, Any], frames: list[Any], generation: int) -> None:
        kind = header["t"]
        if kind == proto.INFER:
            if self.info.decoupled:
                self._open_stream(peer, header, frames)
                return
            self._busy_since = time.monotonic()
            self._infer(peer, header, frames, generation)
            with self._lock:
                if self._current(generation):
                    self._busy_since = None
        elif kind == proto.ACK:
            stream = self._streams.get(header["id"])
            if stream is not None:
                stream.ack()
        elif kind == proto.CANCEL:
            stream = self._streams.get(header["id"])
            if stream is not None and stream.cancel():
                LOGGER.info(
                    "model %r instance %d: stream %d cancelled (%s)",
                    self.info.model_name,
                    self.index,
                    header["id"],
                    header.get("why") or "cancelled by the client",
                )
        elif kind == proto.HELLO:
            with self._lock:  # a new stub: the streams of the one before it have no reader any more
                orphans = [s for s in self._streams.values() if s.peer != peer]
            for stream in orphans:
                stream.cancel()
            self._sock.send(peer, [proto.dumps({"t": proto.WELCOME, "id": header["id"]})])
            self._watch_stub(header.get("pid"))
            self.connected.set()

    def _requests(self, header: dict[str, Any], frames: list[Any]) -> list[Request]:
        segment = header["seg"]
        requests = []
        for descriptors, (params, wanted, request_id) in zip(header["reqs"], header["meta"], strict=True):
            parameters = json.loads(params) if params and params != "{}" else {}
            data = unpack(descriptors, frames, segment, self._reader)
            if segment and self.info.decoupled:  # a stream outlives the proxy's reuse of its segment
                data = {name: array.copy() for name, array in data.items()}
            requests.append(Request(data, parameters, list(wanted) if wanted else None, request_id or ""))
        return requests

    def _infer(self, ident: Any, header: dict[str, Any], frames: list[Any], generation: int = 0) -> None:
        call_id = header["id"]
        requests: list[Request] = []
        try:
            requests = self._requests(header, frames)
            started = time.perf_counter_ns()
            result = self._fn(requests)
            if type(result) is not list and inspect.isawaitable(result):
                result = self._loop.run(result)
            function_ns = time.perf_counter_ns() - started  # the proxy's hop metric leaves it out
            responses = check_responses(self.info, requests, result, strict=self._strict)
            self._send(ident, proto.OK, call_id, responses, function_ns, generation)
        except ChannelClosed:
            raise
        except BaseException as exc:  # SystemExit, KeyboardInterrupt...: this call fails, not the instance
            self._send_error(ident, call_id, exc, requests, generation)

    def _open_stream(self, peer: Any, header: dict[str, Any], frames: list[Any]) -> None:
        call_id = header["id"]
        stream = _OpenStream(call_id, peer)
        try:
            requests = self._requests(header, frames)
        except Exception as exc:
            self._send_error(peer, call_id, exc, [])
            return
        for request in requests:
            request._cancelled = stream.cancelled
        with self._lock:
            refused = self._refusing
            if not refused:
                self._streams[call_id] = stream
        if refused:
            message = f"model {self.info.model_name!r}: stream not started: {refused}"
            self._sock.send(peer, [proto.dumps({"t": proto.ERR, "id": call_id, "msg": message})])
            return
        threading.Thread(
            target=self._run_stream,
            args=(stream, requests),
            name=f"pytriton_torch-{self.info.model_name}-{self.index}-stream-{call_id}",
            daemon=True,
        ).start()

    def _run_stream(self, stream: _OpenStream, requests: list[Request]) -> None:
        """Run one stream to its end or its cancellation (in its own thread)."""
        result: Any = None
        try:
            result = self._fn(requests)
            for chunk in self._chunks(result):
                if stream.cancelled.is_set():
                    break
                responses = check_responses(self.info, requests, chunk, strict=self._strict)
                descriptors, frames, _ = self._stream_packer.pack(responses)
                stream.expect_ack()
                header = {"t": proto.PART, "id": stream.call_id, "resps": descriptors, "seg": "", "fn": 0}
                self._sock.send(stream.peer, [proto.dumps(header), *frames])
                if not stream.wait_ack():
                    break
            else:
                if not stream.cancelled.is_set():
                    self._sock.send(stream.peer, [proto.dumps({"t": proto.END, "id": stream.call_id})])
                    return
            self._close_generator(result)  # the proxy was answered when the stream was cancelled
        except BaseException as exc:
            if stream.cancelled.is_set():  # nobody reads it any more; the proxy was answered
                LOGGER.debug(
                    "model %r: cancelled stream %d ended with %r", self.info.model_name, stream.call_id, exc
                )
            else:
                self._send_error(stream.peer, stream.call_id, exc, requests)
        finally:
            with self._lock:
                self._streams.pop(stream.call_id, None)

    def _chunks(self, result: Any) -> Iterator[Any]:
        if inspect.isasyncgen(result):
            return self._loop.iterate(result)
        if inspect.isgenerator(result) or isinstance(result, Iterator):
            return result  # type: ignore[no-any-return]
        # A plain function bound to a decoupled model answers once.
        return iter([self._loop.run(result) if inspect.isawaitable(result) else result])

    def _close_generator(self, result: Any) -> None:
        """Close a cancelled stream's generator: GeneratorExit is raised at its ``yield``."""
        try:
            if inspect.isasyncgen(result):
                self._loop.run(result.aclose())
            elif inspect.isgenerator(result):
                result.close()
        except Exception as exc:  # e.g. it yielded again after GeneratorExit
            LOGGER.warning(
                "model %r: closing a cancelled stream's generator failed: %r", self.info.model_name, exc
            )

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
        self,
        ident: Any,
        call_id: int,
        exc: BaseException,
        requests: list[Request],
        generation: int | None = None,
    ) -> None:
        if generation is not None and not self._current(generation):
            return
        # Our own errors already say what was wrong; others keep their type for the client.
        message = str(exc) if isinstance(exc, PyTritonTorchError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, Exception):
            message += " (raised by the infer function; only this call failed, the model keeps serving)"
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
