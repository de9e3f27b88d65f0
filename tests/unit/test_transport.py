"""Both channel transports: framing, reconnects and closing, without a server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from pytriton_torch._channel._transport import ChannelClosed, ClientEndpoint, ServerEndpoint


@pytest.fixture
def zmq_context() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.term()


def _echo_server(server: ServerEndpoint, count: int, done: threading.Event | None = None) -> threading.Thread:
    """Echo ``count`` messages; release the endpoint once ``done`` is set (when given).

    ZeroMQ sends from its I/O thread: releasing (LINGER 0) right after the last ``send`` could
    drop that answer before it left, so the test says when it has received it.
    """

    def run() -> None:
        try:
            for _ in range(count):
                peer, frames = server.recv()
                server.send(peer, [bytes(f) for f in reversed(frames)])
            if done is not None:
                done.wait(10)
        except ChannelClosed:
            pass
        finally:
            server.release()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("kind", ["unix", "zmq"])
def test_round_trip_keeps_frames_and_sizes(kind: str, tmp_path: Path, zmq_context: zmq.Context[Any]) -> None:
    address = str(tmp_path / "sock")
    server = ServerEndpoint(kind, address, zmq_context)
    received = threading.Event()
    thread = _echo_server(server, 3, received)
    client = ClientEndpoint(kind, address)
    big = np.arange(300_000, dtype=np.float32)  # 1.2 MB: more than one socket buffer
    for frames in ([b"header"], [b"h", b"", big.data.cast("B")], [b"x" * 70_000, b"\x00tail\x00"]):
        client.send(frames)
        assert client.poll(10_000)
        answer = [bytes(f) for f in client.recv()]
        assert answer == [bytes(memoryview(f).cast("B")) for f in reversed(frames)]
    received.set()
    thread.join(timeout=10)
    client.close()


def test_unix_socket_is_private(tmp_path: Path) -> None:
    address = str(tmp_path / "sock")
    server = ServerEndpoint("unix", address)
    try:
        assert oct(Path(address).stat().st_mode & 0o777) == "0o600"
    finally:
        server.close()
        server.release()


def test_unix_server_accepts_a_reconnecting_client(tmp_path: Path) -> None:
    address = str(tmp_path / "sock")
    server = ServerEndpoint("unix", address)
    thread = _echo_server(server, 2)
    first = ClientEndpoint("unix", address)
    first.send([b"one"])
    assert [bytes(f) for f in first.recv()] == [b"one"]
    first.close()  # e.g. a stub that died; its replacement connects again
    second = ClientEndpoint("unix", address)
    second.send([b"two"])
    assert second.poll(10_000)
    assert [bytes(f) for f in second.recv()] == [b"two"]
    thread.join(timeout=10)
    second.close()


def test_close_wakes_a_blocked_receiver(tmp_path: Path) -> None:
    server = ServerEndpoint("unix", str(tmp_path / "sock"))
    thread = _echo_server(server, 1)
    server.close()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_client_sees_a_closed_server(tmp_path: Path) -> None:
    address = str(tmp_path / "sock")
    server = ServerEndpoint("unix", address)
    thread = _echo_server(server, 1)
    client = ClientEndpoint("unix", address)
    client.send([b"ping"])
    client.recv()
    thread.join(timeout=5)  # the server thread released its listener and connection
    assert client.poll(5_000)  # EOF is readable
    with pytest.raises(ChannelClosed):
        client.recv()
    client.close()


def test_unknown_transport(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown channel transport 'tcp'"):
        ServerEndpoint("tcp", str(tmp_path / "sock"))


def test_unix_framing_keeps_messages_that_arrive_together_or_in_pieces() -> None:
    """Several messages in one read, one message over many reads, and a message larger than a read."""
    import socket
    import struct

    from pytriton_torch._channel._transport import _UnixStream

    left, right = socket.socketpair()
    sender, receiver = _UnixStream(left), _UnixStream(right)
    big = bytes(range(256)) * 300  # 76.8 kB: more than the first read
    sender.send([b"one", b"\x00"])
    sender.send([b"two", big])
    sender.send([b"three"])
    assert [bytes(f) for f in receiver.recv()] == [b"one", b"\x00"]
    assert receiver.pending  # the rest was read together with the first message
    assert [bytes(f) for f in receiver.recv()] == [b"two", big]
    assert [bytes(f) for f in receiver.recv()] == [b"three"]
    assert not receiver.pending
    # A message written a few bytes at a time is put back together.
    raw = struct.pack("<IQQ", 2, 5, 3) + b"hello" + b"abc"
    for i in range(0, len(raw), 3):
        left.sendall(raw[i : i + 3])
    frames = receiver.recv()
    assert [bytes(f) for f in frames] == [b"hello", b"abc"]
    frames[0][0] = ord("j")  # frames are writable views (arrays built on them must be writable)
    left.close()
    with pytest.raises(ChannelClosed):
        receiver.recv()
    right.close()


def test_unix_client_sees_an_already_received_answer_as_ready(tmp_path: Path) -> None:
    """Two answers that arrive together: ``poll`` must report the second one although the socket is empty."""
    address = str(tmp_path / "sock")
    server = ServerEndpoint("unix", address)
    client = ClientEndpoint("unix", address)
    client.send([b"ping"])
    peer, _ = server.recv()
    server.send(peer, [b"stale"])
    server.send(peer, [b"answer"])
    assert client.poll(5_000)
    assert [bytes(f) for f in client.recv()] == [b"stale"]
    assert client.poll(0)
    assert [bytes(f) for f in client.recv()] == [b"answer"]
    client.send([b"a"])
    client.send([b"b"])
    assert [bytes(f) for f in server.recv()[1]] == [b"a"]
    assert [bytes(f) for f in server.recv()[1]] == [b"b"]
    server.close()
    server.release()
    client.close()


@pytest.mark.parametrize("kind", ["unix", "zmq"])
def test_close_after_the_serving_thread_released_does_not_raise(
    kind: str, tmp_path: Path, zmq_context: zmq.Context[Any]
) -> None:
    # The serving thread releases the endpoint when it ends; stop() closes it later (any thread).
    server = ServerEndpoint(kind, str(tmp_path / "sock"), zmq_context)
    server.release()
    server.close()
    server.release()
    server.close()
    with pytest.raises(ChannelClosed):
        server.recv()


@pytest.mark.parametrize("kind", ["unix", "zmq"])
def test_multiplexed_endpoints_send_from_many_threads_while_one_receives(
    kind: str, tmp_path: Path, zmq_context: zmq.Context[Any]
) -> None:
    """Streams: every answer arrives whole although several threads send at once on each side."""
    address = str(tmp_path / "sock")
    server = ServerEndpoint(kind, address, zmq_context, multiplexed=True)
    client = ClientEndpoint(kind, address, multiplexed=True)
    payload = b"p" * 200_000  # larger than one socket write

    def serve() -> None:
        try:
            while True:
                peer, frames = server.recv()
                tag = bytes(frames[0])
                threading.Thread(target=server.send, args=(peer, [tag, payload]), daemon=True).start()
        except ChannelClosed:
            pass
        finally:
            server.release()

    serving = threading.Thread(target=serve, daemon=True)
    serving.start()
    senders = [threading.Thread(target=client.send, args=([f"{i}".encode(), payload],)) for i in range(16)]
    for thread in senders:
        thread.start()
    got: set[bytes] = set()
    while len(got) < 16:
        assert client.poll(10_000)
        tag, body = (bytes(f) for f in client.recv())
        assert body == payload
        got.add(tag)
    assert got == {f"{i}".encode() for i in range(16)}
    server.close()
    serving.join(10)
    client.close()
