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

TRANSPORTS = ("unix", "zmq")

_COUNT = struct.Struct("<I")
_LENGTH = struct.Struct("<Q")


class ChannelClosed(Exception):
    """The endpoint was closed (server stopping) or the peer went away."""


def _read_exact(sock: socket.socket, view: memoryview) -> None:
    while view.nbytes:
        got = sock.recv_into(view)
        if got == 0:
            raise ChannelClosed("peer closed the connection")
        view = view[got:]


class _UnixStream:
    """Framing over one connected stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, frames: Sequence[Any]) -> None:
        views = [memoryview(f).cast("B") for f in frames]
        prefix = _COUNT.pack(len(views)) + b"".join(_LENGTH.pack(v.nbytes) for v in views)
        parts: list[Any] = [prefix, *views]
        total = sum(memoryview(p).nbytes for p in parts)
        sent = self.sock.sendmsg(parts)
        if sent < total:  # a blocking socket normally sends everything; finish the remainder
            rest = b"".join(bytes(p) for p in parts)[sent:]
            self.sock.sendall(rest)

    def recv(self) -> list[memoryview]:
        head = bytearray(4)
        _read_exact(self.sock, memoryview(head))
        (count,) = _COUNT.unpack(head)
        lengths_raw = bytearray(8 * count)
        _read_exact(self.sock, memoryview(lengths_raw))
        lengths = [_LENGTH.unpack_from(lengths_raw, 8 * i)[0] for i in range(count)]
        # A fresh buffer per message: frames of the previous one may still be referenced.
        view = memoryview(bytearray(sum(lengths)))
        _read_exact(self.sock, view)
        frames, pos = [], 0
        for length in lengths:
            frames.append(view[pos : pos + length])
            pos += length
        return frames

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
    ) -> None:
        self.kind = kind
        self._closed = threading.Event()
        self._on_peer_lost = on_peer_lost  # unix only: the connected stub went away unannounced
        if kind == "zmq":
            assert zmq_context is not None
            self._zsock = zmq_context.socket(zmq.ROUTER)
            self._zsock.setsockopt(zmq.LINGER, 0)
            self._zsock.bind(f"ipc://{address}")
            return
        if kind != "unix":
            raise ValueError(f"unknown channel transport {kind!r}; expected one of {', '.join(TRANSPORTS)}")
        self._wake_r, self._wake_w = os.pipe()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)
        self._listener.bind(address)
        os.chmod(address, 0o600)
        self._listener.listen(4)
        self._conn: _UnixStream | None = None
        self._poller = select.poll()
        self._poller.register(self._wake_r, select.POLLIN)
        self._poller.register(self._listener.fileno(), select.POLLIN)

    def recv(self) -> tuple[Any, list[Any]]:
        """Block for the next message; returns (peer, frames)."""
        if self.kind == "zmq":
            try:
                ident, *frames = self._zsock.recv_multipart(copy=False)
            except zmq.ContextTerminated:
                raise ChannelClosed("closed") from None
            return ident, [f.buffer for f in frames]
        while True:
            if self._closed.is_set():
                raise ChannelClosed("closed")
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
        if self.kind == "zmq":
            self._zsock.send_multipart([peer, *frames], copy=False)
            return
        with contextlib.suppress(OSError):  # the stub died mid-answer; it fails the request itself
            peer.send(frames)

    def close(self) -> None:
        """Make a blocked ``recv`` raise ChannelClosed; releases the socket (callable from any thread)."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self.kind == "unix":
            os.write(self._wake_w, b"x")

    def release(self) -> None:
        """Free the endpoint's resources (called by the thread that used it)."""
        if self.kind == "zmq":
            self._zsock.close(0)
            return
        self._replace(None)
        self._listener.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


class ClientEndpoint:
    """Proxy side: one connection to its worker.

    ``spin_us``: how long ``poll`` busy-polls (yielding) before sleeping (unix transport only).
    """

    def __init__(self, kind: str, address: str, spin_us: float = 0.0) -> None:
        self.kind = kind
        self._spin_s = spin_us / 1e6
        if kind == "zmq":
            self._zctx: zmq.Context[Any] = zmq.Context()
            self._zsock = self._zctx.socket(zmq.DEALER)
            self._zsock.setsockopt(zmq.LINGER, 0)
            self._zsock.connect(f"ipc://{address}")
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(address)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self._stream = _UnixStream(sock)

    def send(self, frames: Sequence[Any]) -> None:
        if self.kind == "zmq":
            self._zsock.send_multipart(list(frames), copy=False)
        else:
            self._stream.send(frames)

    def poll(self, timeout_ms: int) -> bool:
        if self.kind == "zmq":
            return bool(self._zsock.poll(timeout_ms))
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
        if self.kind == "zmq":
            return [f.buffer for f in self._zsock.recv_multipart(copy=False)]
        return self._stream.recv()

    def close(self) -> None:
        if self.kind == "zmq":
            self._zsock.close(0)
            self._zctx.term()
        else:
            self._stream.close()
