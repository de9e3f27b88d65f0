"""Message transports between the proxy (stub side) and the worker (user side).

A message is a list of frames (a msgpack header, then raw tensor bytes). Two transports:

- ``unix`` (default): a Unix stream socket in the private workspace, messages framed as
  ``<u32 count><u64 length>*count<frames...>`` and sent with one ``sendmsg``. The sending thread
  writes straight to the socket and the receiving thread wakes straight from it: two thread
  wake-ups per round trip.
- ``zmq``: ZeroMQ DEALER (proxy) / ROUTER (worker) over ``ipc://``. Every message also passes
  through libzmq's I/O thread on both sides (four more wake-ups per round trip), which costs
  ~0.2 ms per call on small virtual machines; kept for comparison and as a fallback.

The worker side (:class:`ServerEndpoint`) accepts a new connection when a restarted stub
reconnects; ``close()`` from any thread makes a blocked ``recv`` raise :class:`ChannelClosed`.

Streaming (decoupled) models multiplex several calls on one channel: one thread receives while
others send. Sends are serialised by a lock; a ZeroMQ socket must never be used by two threads
at once, so a ``multiplexed`` ZeroMQ endpoint receives by polling in short slices under that lock.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from ..exceptions import PyTritonTorchChannelError

TRANSPORTS = ("unix", "zmq")

_COUNT = struct.Struct("<I")
_ZMQ_SLICE_MS = 5  # multiplexed ZeroMQ: longest a sender waits for the receiving thread's poll


class ChannelClosed(PyTritonTorchChannelError):
    """The endpoint was closed (server stopping) or the peer went away."""


def _read_exact(sock: socket.socket, view: memoryview) -> None:
    while view.nbytes:
        got = sock.recv_into(view)
        if got == 0:
            raise ChannelClosed("peer closed the connection")
        view = view[got:]


_FIRST_READ = 16 * 1024
_ZMQ_CLOSE_CHECK_MS = 100


class _UnixStream:
    """Framing over one connected stream socket.

    A message is usually small and read with one ``recv_into``; bytes read past its end (the next
    message had already arrived) are kept for the next ``recv``.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._rest = b""

    def send(self, frames: Sequence[Any]) -> None:
        views = [memoryview(f).cast("B") for f in frames]
        lengths = [v.nbytes for v in views]
        prefix = struct.pack(f"<I{len(lengths)}Q", len(lengths), *lengths)
        sent = self.sock.sendmsg([prefix, *views])
        total = len(prefix) + sum(lengths)
        if sent < total:  # a blocking socket normally sends everything; finish the remainder
            rest = b"".join([prefix, *(bytes(v) for v in views)])[sent:]
            self.sock.sendall(rest)

    def recv(self) -> list[memoryview]:
        # A fresh buffer per message: frames of the previous one may still be referenced.
        buffer = bytearray(max(_FIRST_READ, len(self._rest)))
        have = len(self._rest)
        buffer[:have] = self._rest
        if not have:
            have = self.sock.recv_into(buffer)
            if have == 0:
                raise ChannelClosed("peer closed the connection")
        have = self._at_least(buffer, have, 4)
        (count,) = _COUNT.unpack_from(buffer)
        head = 4 + 8 * count
        have = self._at_least(buffer, have, head)
        lengths = struct.unpack_from(f"<{count}Q", buffer, 4)
        end = head + sum(lengths)
        if end > len(buffer):  # a large message: one buffer of its exact size
            buffer.extend(bytes(end - len(buffer)))
        have = self._at_least(buffer, have, end)
        self._rest = bytes(buffer[end:have])
        view = memoryview(buffer)
        frames, pos = [], head
        for length in lengths:
            frames.append(view[pos : pos + length])
            pos += length
        return frames

    @property
    def pending(self) -> bool:
        """Bytes of a next message were already read: ``recv`` must be called before polling."""
        return bool(self._rest)

    def _at_least(self, buffer: bytearray, have: int, need: int) -> int:
        if have < need:
            _read_exact(self.sock, memoryview(buffer)[have:need])
            return need
        return have

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class ServerEndpoint:
    """Worker side: waits for its proxy, receives requests, answers the peer that asked."""

    def __init__(
        self,
        kind: str,
        address: str,
        zmq_context: zmq.Context[Any] | None = None,
        on_peer_lost: Callable[[], None] | None = None,
        multiplexed: bool = False,
    ) -> None:
        self.kind = kind
        self._multiplexed = multiplexed
        self._send_lock = threading.Lock()
        self._closed = threading.Event()
        # close() (any thread) writes to the wake pipe that release() (the serving thread) closes.
        self._close_lock = threading.Lock()
        self._released = False
        self._on_peer_lost = on_peer_lost  # unix only: the connected stub went away unannounced
        if kind == "zmq":
            assert zmq_context is not None
            self._zsock = zmq_context.socket(zmq.ROUTER)
            self._zsock.setsockopt(zmq.LINGER, 0)
            self._zsock.bind(f"ipc://{address}")
            self._remember(address)
            return
        if kind != "unix":
            raise ValueError(f"unknown channel transport {kind!r}; expected one of {', '.join(TRANSPORTS)}")
        self._wake_r, self._wake_w = os.pipe()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)
        self._listener.bind(address)
        os.chmod(address, 0o600)
        self._remember(address)
        self._listener.listen(4)
        self._conn: _UnixStream | None = None
        self._poller = select.poll()
        self._poller.register(self._wake_r, select.POLLIN)
        self._poller.register(self._listener.fileno(), select.POLLIN)

    def _remember(self, address: str) -> None:
        """The socket file's identity: release() removes the file only while it is still ours."""
        self._address = address
        self._inode = os.stat(address).st_ino

    def _remove_file(self) -> None:
        with contextlib.suppress(OSError):  # a model bound again under this name may own it now
            if os.stat(self._address).st_ino == self._inode:
                os.unlink(self._address)

    def recv(self) -> tuple[Any, list[Any]]:
        """Block for the next message; returns (peer, frames)."""
        if self.kind == "zmq":
            try:
                if self._multiplexed:
                    ident, *frames = self._zmq_recv_sliced()
                else:
                    # close() cannot wake a blocked zmq recv: look at the flag between short polls.
                    while not self._zsock.poll(_ZMQ_CLOSE_CHECK_MS):
                        if self._closed.is_set():
                            raise ChannelClosed("closed")
                    ident, *frames = self._zsock.recv_multipart(copy=False)
            except (zmq.ContextTerminated, zmq.ZMQError):
                raise ChannelClosed("closed") from None
            return ident, [f.buffer for f in frames]
        while True:
            if self._closed.is_set():
                raise ChannelClosed("closed")
            if self._conn is not None and self._conn.pending:
                return self._conn, self._conn.recv()
            for fd, _ in self._poller.poll():
                if fd == self._wake_r:
                    raise ChannelClosed("closed")
                if fd == self._listener.fileno():
                    sock, _ = self._listener.accept()
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
                    self._replace(_UnixStream(sock))
                elif self._conn is not None and fd == self._conn.sock.fileno():
                    try:
                        return self._conn, self._conn.recv()
                    except (ChannelClosed, OSError):
                        self._replace(None)  # the stub went away; a restarted one will reconnect
                        if self._on_peer_lost is not None and not self._closed.is_set():
                            self._on_peer_lost()

    def _zmq_recv_sliced(self) -> list[Any]:
        while True:
            if self._closed.is_set():
                raise ChannelClosed("closed")
            with self._send_lock:
                if self._zsock.poll(_ZMQ_SLICE_MS):
                    return self._zsock.recv_multipart(copy=False)  # type: ignore[no-any-return]

    def peer_lost(self) -> None:
        """Report that the connected stub died (the zmq transport learns it from the stub's pid)."""
        if self._on_peer_lost is not None and not self._closed.is_set():
            self._on_peer_lost()

    def _replace(self, conn: _UnixStream | None) -> None:
        if self._conn is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._poller.unregister(self._conn.sock.fileno())
            self._conn.close()
        self._conn = conn
        if conn is not None:
            self._poller.register(conn.sock.fileno(), select.POLLIN)

    def send(self, peer: Any, frames: Sequence[Any]) -> None:
        """Send to ``peer`` (any thread); a peer that went away is ignored (it fails the call itself)."""
        with self._send_lock:
            if self.kind == "zmq":
                with contextlib.suppress(zmq.ZMQError):  # released at stop while a stream answered
                    self._zsock.send_multipart([peer, *frames], copy=False)
                return
            with contextlib.suppress(OSError):  # the stub died mid-answer; it fails the request itself
                peer.send(frames)

    def close(self) -> None:
        """Make a blocked ``recv`` raise ChannelClosed; releases the socket (callable from any thread)."""
        with self._close_lock:
            if self._closed.is_set():
                return
            self._closed.set()
            if self.kind == "unix" and not self._released:
                os.write(self._wake_w, b"x")

    def release(self) -> None:
        """Free the endpoint's resources (called by the thread that used it; idempotent)."""
        with self._close_lock:
            if self._released:
                return
            self._released = True
            self._closed.set()
            if self.kind == "zmq":
                self._zsock.close(0)
            else:
                self._replace(None)
                self._listener.close()
                os.close(self._wake_r)
                os.close(self._wake_w)
            self._remove_file()


class ClientEndpoint:
    """Proxy side: one connection to its worker.

    ``spin_us``: how long ``poll`` busy-polls (yielding) before sleeping (unix transport only).
    ``multiplexed``: ``send`` may be called from other threads than the one that polls/receives.
    """

    def __init__(self, kind: str, address: str, spin_us: float = 0.0, multiplexed: bool = False) -> None:
        self.kind = kind
        self._spin_s = spin_us / 1e6
        self._multiplexed = multiplexed
        self._lock = threading.Lock()
        if kind == "zmq":
            self._zctx: zmq.Context[Any] = zmq.Context()
            self._zsock = self._zctx.socket(zmq.DEALER)
            self._zsock.setsockopt(zmq.LINGER, 0)
            self._zsock.connect(f"ipc://{address}")
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(address)
        except OSError as exc:
            sock.close()
            raise PyTritonTorchChannelError(f"cannot connect to the worker socket {address}: {exc}") from exc
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self._stream = _UnixStream(sock)

    def send(self, frames: Sequence[Any]) -> None:
        """Send one message; raises :class:`ChannelClosed` when the connection is gone."""
        if not self._multiplexed:
            self._send(frames)
            return
        with self._lock:
            self._send(frames)

    def _send(self, frames: Sequence[Any]) -> None:
        if self.kind == "zmq":
            self._zsock.send_multipart(list(frames), copy=False)
            return
        try:
            self._stream.send(frames)
        except OSError as exc:  # e.g. BrokenPipeError: the worker's end was closed
            raise ChannelClosed(f"{type(exc).__name__}: {exc}") from exc

    def poll(self, timeout_ms: int) -> bool:
        if self.kind == "zmq":
            if not self._multiplexed:
                return bool(self._zsock.poll(timeout_ms))
            end = time.monotonic() + timeout_ms / 1000
            while True:
                with self._lock:
                    if self._zsock.poll(min(timeout_ms, _ZMQ_SLICE_MS)):
                        return True
                if time.monotonic() >= end:
                    return False
        if self._stream.pending:
            return True
        fd = [self._stream.sock]
        if self._spin_s:
            # Waking a sleeping thread costs ~0.1 ms on small VMs; the answer usually comes sooner,
            # so poll for a short while first, yielding the CPU to anything else runnable.
            end = time.perf_counter() + self._spin_s
            while time.perf_counter() < end:
                if select.select(fd, [], [], 0)[0]:
                    return True
                os.sched_yield()
        ready, _, _ = select.select(fd, [], [], timeout_ms / 1000)
        return bool(ready)

    def recv(self) -> list[Any]:
        """Receive one message; raises :class:`ChannelClosed` when the connection is gone."""
        if self.kind == "zmq":
            with self._lock:  # uncontended unless multiplexed
                return [f.buffer for f in self._zsock.recv_multipart(copy=False)]
        try:
            return self._stream.recv()
        except OSError as exc:  # e.g. ConnectionResetError
            raise ChannelClosed(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        if self.kind == "zmq":
            self._zsock.close(0)
            self._zctx.term()
        else:
            self._stream.close()
