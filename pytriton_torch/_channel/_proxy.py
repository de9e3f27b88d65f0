"""The Python-backend model that runs inside Triton's stub and forwards batches to the worker.

Triton loads ``<workspace>/models/<name>/1/model.py``, a two-line shim that imports
:class:`TritonPythonModel` from here. Each model instance connects to its own worker socket.

A non-streaming model answers within ``execute`` (no other thread on that path). A streaming
(decoupled) model's ``execute`` only forwards the batch and returns: a reader thread dispatches
the worker's chunks to the requests' response senders by call id, acknowledges each chunk, and
checks whether the clients cancelled (``is_cancelled``), so one instance serves many streams.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pathlib
import sys
import threading
import time
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

from .._dtypes import BF16_DTYPE
from ..exceptions import PyTritonTorchChannelError, PyTritonTorchError, PyTritonTorchTimeoutError
from . import _protocol as proto
from ._bytes import install_stub_helpers
from ._codec import Packer, unpack
from ._metrics import ChannelMetrics
from ._shm import ShmReader, ShmWriter, pid_alive
from ._transport import ChannelClosed, ClientEndpoint

_POLL_MS = 200
_CHECK_S = 0.1  # streams: how often the reader checks for cancelled clients and timed-out streams

install_stub_helpers(pb_utils)  # this stub converts BYTES tensors with our vectorised codec


class _Stream:
    """Stub side of one open stream: the batch's response senders and the stream's deadline."""

    def __init__(self, senders: list[Any], request_ids: list[str], timeout_s: float | None) -> None:
        self.senders = senders
        self.request_ids = request_ids
        self.live = list(range(len(senders)))  # requests whose clients still listen
        self._timeout_s = timeout_s
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def progressed(self) -> None:
        if self._timeout_s is not None:
            self.deadline = time.monotonic() + self._timeout_s


class TritonPythonModel:
    """Proxy model: one per Triton model instance, forwarding to the matching worker thread."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        # args["model_repository"] is this model's folder in the store.
        params = json.loads((pathlib.Path(args["model_repository"]) / proto.SETTINGS_FILE).read_text())
        self._model_name = args["model_name"]
        instance_name = args["model_instance_name"]
        self._instance = int(instance_name.rsplit("_", 1)[1])
        self._owner_pid = int(params[proto.P_OWNER_PID])
        timeout = float(params[proto.P_INFER_TIMEOUT])
        self._infer_timeout = timeout if timeout > 0 else None
        self._max_input_bytes = int(params[proto.P_MAX_INPUT_BYTES])
        self._decoupled = bool(config.get("model_transaction_policy", {}).get("decoupled"))
        self._outputs = {o["name"] for o in config.get("output", [])}
        # numpy has no bfloat16: BF16 tensors cross pb_utils through DLPack (needs torch in the stub).
        self._bf16_inputs = {i["name"] for i in config.get("input", []) if i.get("data_type") == "TYPE_BF16"}
        has_bf16 = self._bf16_inputs or any(
            o.get("data_type") == "TYPE_BF16" for o in config.get("output", [])
        )
        self._torch: Any = importlib.import_module("torch") if has_bf16 else None
        self._next_id = 0

        address = proto.endpoint(params[proto.P_IPC_DIR], self._model_name, self._instance)
        spin_us = float(params[proto.P_SPIN_US])
        self._sock = ClientEndpoint(params[proto.P_TRANSPORT], address, spin_us, multiplexed=self._decoupled)
        prefix = f"{params[proto.P_SHM_PREFIX]}-{self._instance}-{os.getpid()}-req"
        self._writer = ShmWriter(prefix)
        self._packer = Packer(self._writer)
        self._reader = ShmReader()
        self._metrics = ChannelMetrics.create(pb_utils, self._model_name, instance_name)
        self._handshake(float(params[proto.P_CONNECT_TIMEOUT]))
        if self._decoupled:
            self._max_streams = max(1, int(params[proto.P_MAX_STREAMS]))
            # Stream inputs travel in the message: the worker keeps them for the stream's life.
            self._stream_packer = Packer(self._writer, inline_limit=sys.maxsize)
            self._streams: dict[int, _Stream] = {}
            self._streams_changed = threading.Condition()
            self._stopping = False
            self._reader_thread = threading.Thread(
                target=self._read_streams, name="pytriton_torch-streams", daemon=True
            )
            self._reader_thread.start()

    def _handshake(self, timeout_s: float) -> None:
        self._next_id += 1
        self._sock.send([proto.dumps({"t": proto.HELLO, "id": self._next_id, "pid": os.getpid()})])
        header, _ = self._receive(self._next_id, timeout_s)
        if header["t"] != proto.WELCOME:
            raise PyTritonTorchChannelError(
                f"model {self._model_name!r}: unexpected handshake answer {header['t']!r}"
            )

    def _receive(self, expected_id: int, timeout_s: float | None) -> tuple[dict[str, Any], list[Any]]:
        """Wait for the answer to ``expected_id``; stale answers (to timed-out calls) are dropped."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if not self._sock.poll(_POLL_MS):
                if not pid_alive(self._owner_pid):
                    raise PyTritonTorchChannelError(f"the process serving model {self._model_name!r} has exited")
                if deadline is not None and time.monotonic() > deadline:
                    raise PyTritonTorchTimeoutError(
                        f"model {self._model_name!r}: no answer from the infer function within {timeout_s:g}s"
                    )
                continue
            header_frame, *frames = self._sock.recv()
            header = proto.loads(header_frame)
            if header.get("id") == expected_id:
                return header, frames

    def execute(self, requests: list[Any]) -> list[Any] | None:
        if not self._max_input_bytes:
            return self._execute(requests)
        # Oversized requests fail alone, before any of their bytes is copied into the channel.
        problems = [self._oversized(request) for request in requests]
        if not any(problems):
            return self._execute(requests)
        accepted = [request for request, problem in zip(requests, problems, strict=True) if not problem]
        answers = iter((self._execute(accepted) if accepted else None) or [])
        out = []
        for request, problem in zip(requests, problems, strict=True):
            if problem:
                out.extend(self._fail([request], problem) or [])  # decoupled: sent, nothing returned
            elif not self._decoupled:
                out.append(next(answers))
        return None if self._decoupled else out

    def _oversized(self, request: Any) -> str:
        for tensor in request.inputs():
            nbytes = _nbytes(self._input_array(tensor))
            if nbytes > self._max_input_bytes:
                return (
                    f"model {self._model_name!r}: input {tensor.name()!r} has {nbytes} bytes; "
                    f"the limit is {self._max_input_bytes} bytes (ModelConfig.max_input_bytes)"
                )
        return ""

    def _execute(self, requests: list[Any]) -> list[Any] | None:
        if self._decoupled:
            self._open_stream(requests)
            return None
        self._next_id += 1
        call_id = self._next_id
        try:
            groups, meta = [], []
            for request in requests:
                groups.append({t.name(): self._input_array(t) for t in request.inputs()})
                meta.append(
                    [request.parameters(), sorted(request.requested_output_names()), request.request_id()]
                )
            started = time.perf_counter_ns()
            descriptors, frames, segment = self._packer.pack(groups)
            header = {"t": proto.INFER, "id": call_id, "reqs": descriptors, "meta": meta, "seg": segment}
            self._sock.send([proto.dumps(header), *frames])
            answer, frames = self._receive(call_id, self._infer_timeout)
        except Exception as exc:  # every request of the batch gets the error; the model keeps serving
            return self._fail(requests, self._message(exc))
        if answer["t"] == proto.ERR:
            return self._fail(requests, answer["msg"])
        if self._metrics is not None:
            elapsed = time.perf_counter_ns() - started
            self._metrics.record(len(requests), elapsed, answer.get("fn", 0), self._shm_bytes)
        return [self._response(group, frames, answer["seg"]) for group in answer["resps"]]

    def _shm_bytes(self) -> int:
        return self._writer.size + self._reader.mapped_bytes

    def _input_array(self, tensor: Any) -> Any:
        if tensor.name() not in self._bf16_inputs:
            return tensor.as_numpy()
        torch = self._torch
        return torch.from_dlpack(tensor.to_dlpack()).view(torch.int16).numpy().view(BF16_DTYPE)

    def _output_tensor(self, name: str, array: Any) -> Any:
        if array.dtype != BF16_DTYPE:
            return pb_utils.Tensor(name, array)
        torch = self._torch
        tensor = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
        return pb_utils.Tensor.from_dlpack(name, torch.utils.dlpack.to_dlpack(tensor))

    def _response(self, descriptors: list[Any], frames: list[Any], segment: str) -> Any:
        arrays = unpack(descriptors, frames, segment, self._reader)
        return pb_utils.InferenceResponse(
            output_tensors=[self._output_tensor(name, array) for name, array in arrays.items()]
        )

    def _open_stream(self, requests: list[Any]) -> None:
        """Forward a streaming batch and return; the reader thread sends its chunks."""
        senders = [r.get_response_sender() for r in requests]
        ids = [r.request_id() for r in requests]
        try:
            self._wait_for_a_stream_slot()
            groups, meta = [], []
            for request in requests:
                groups.append({t.name(): self._input_array(t) for t in request.inputs()})
                meta.append(
                    [request.parameters(), sorted(request.requested_output_names()), request.request_id()]
                )
            descriptors, frames, segment = self._stream_packer.pack(groups)
            self._next_id += 1
            call_id = self._next_id
            with self._streams_changed:
                self._streams[call_id] = _Stream(senders, ids, self._infer_timeout)
            header = {"t": proto.INFER, "id": call_id, "reqs": descriptors, "meta": meta, "seg": segment}
            try:
                self._sock.send([proto.dumps(header), *frames])
            except BaseException:
                self._end_stream(call_id)
                raise
        except Exception as exc:
            self._fail_stream(senders, self._message(exc), ids)

    def _wait_for_a_stream_slot(self) -> None:
        """Block while the instance serves ``max_concurrent_streams`` streams (Triton queues the rest)."""
        with self._streams_changed:
            while len(self._streams) >= self._max_streams:
                if self._stopping:
                    raise PyTritonTorchChannelError(f"model {self._model_name!r} is being unloaded")
                if not pid_alive(self._owner_pid):
                    raise PyTritonTorchChannelError(f"the process serving model {self._model_name!r} has exited")
                self._streams_changed.wait(_POLL_MS / 1000)

    def _end_stream(self, call_id: int) -> _Stream | None:
        with self._streams_changed:
            stream = self._streams.pop(call_id, None)
            self._streams_changed.notify_all()
        return stream

    def _read_streams(self) -> None:
        """Reader thread: dispatch the worker's stream messages; check cancellation and deadlines."""
        next_check = time.monotonic() + _CHECK_S
        while not self._stopping:
            try:
                message = self._sock.recv() if self._sock.poll(int(_CHECK_S * 1000)) else None
            except Exception as exc:  # the channel broke (worker gone): fail what is open
                if self._stopping:
                    return
                self._fail_all_streams(self._message(exc))
                if not pid_alive(self._owner_pid):
                    return
                time.sleep(_CHECK_S)
                continue
            if message is not None:
                header_frame, *frames = message
                answer = proto.loads(header_frame)
                self._guarded(answer.get("id", 0), self._dispatch, answer, frames)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + _CHECK_S
                self._check_streams()

    def _guarded(self, call_id: int, step: Any, *args: Any) -> None:
        """Run one step of a stream; if it fails (a sender error), that stream alone is failed."""
        try:
            step(*args)
        except Exception as exc:
            stream = self._end_stream(call_id)
            if stream is not None:
                self._cancel_worker(call_id, "its answer could not be delivered")
                self._fail_stream(stream.senders, self._message(exc), stream.request_ids, stream.live)

    def _dispatch(self, answer: dict[str, Any], frames: list[Any]) -> None:
        call_id: int = answer.get("id", 0)
        kind = answer["t"]
        stream = self._streams.get(call_id) if kind in (proto.PART, proto.END, proto.ERR) else None
        if stream is None:
            return  # a late answer of a stream that timed out or was cancelled
        if kind == proto.PART:
            for index in stream.live:
                group = answer["resps"][index]
                stream.senders[index].send(self._response(group, frames, answer["seg"]))
            stream.progressed()
            if self._drop_cancelled(call_id, stream):
                return
            self._sock.send([proto.dumps({"t": proto.ACK, "id": call_id})])
        elif kind == proto.END:
            self._end_stream(call_id)
            for index in stream.live:
                stream.senders[index].send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        else:
            self._end_stream(call_id)
            message = answer.get("msg", f"unexpected message {kind!r}")
            self._fail_stream(stream.senders, message, stream.request_ids, stream.live)

    def _drop_cancelled(self, call_id: int, stream: _Stream) -> bool:
        """Finish the requests whose clients cancelled; True (worker told) when none is left."""
        cancelled = [i for i in stream.live if stream.senders[i].is_cancelled()]
        if not cancelled:
            return False
        stream.live = [i for i in stream.live if i not in cancelled]
        code = getattr(pb_utils.TritonError, "CANCELLED", None)
        for index in cancelled:
            message = _with_id(
                f"model {self._model_name!r}: the request was cancelled", stream.request_ids[index]
            )
            error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
            stream.senders[index].send(
                pb_utils.InferenceResponse(error=error), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
            )
        if stream.live:
            return False
        self._end_stream(call_id)
        self._cancel_worker(call_id, "cancelled by the client")
        return True

    def _check_streams(self) -> None:
        now = time.monotonic()
        for call_id, stream in list(self._streams.items()):
            self._guarded(call_id, self._check_stream, call_id, stream, now)
        if self._streams and not pid_alive(self._owner_pid):
            self._fail_all_streams(f"the process serving model {self._model_name!r} has exited")

    def _check_stream(self, call_id: int, stream: _Stream, now: float) -> None:
        if self._drop_cancelled(call_id, stream):
            return
        if stream.deadline is not None and now > stream.deadline:
            if self._end_stream(call_id) is None:
                return  # answered meanwhile
            assert self._infer_timeout is not None
            self._cancel_worker(call_id, "timed out")
            message = f"model {self._model_name!r}: no answer from the infer function within {self._infer_timeout:g}s"
            self._fail_stream(stream.senders, message, stream.request_ids, stream.live)

    def _cancel_worker(self, call_id: int, why: str) -> None:
        with contextlib.suppress(Exception):  # a worker that is gone has nothing left to stop
            self._sock.send([proto.dumps({"t": proto.CANCEL, "id": call_id, "why": why})])

    def _fail_all_streams(self, message: str) -> None:
        with self._streams_changed:
            streams, self._streams = self._streams, {}
            self._streams_changed.notify_all()
        for stream in streams.values():
            self._fail_stream(stream.senders, message, stream.request_ids, stream.live)

    @staticmethod
    def _fail_stream(
        senders: list[Any], message: str, ids: list[str], which: list[int] | None = None
    ) -> None:
        flag = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        for index in range(len(senders)) if which is None else which:
            error = pb_utils.TritonError(_with_id(message, ids[index]))
            with contextlib.suppress(Exception):  # a request already finished (cancelled client)
                senders[index].send(pb_utils.InferenceResponse(error=error), flags=flag)

    def _fail(self, requests: list[Any], message: str) -> list[Any] | None:
        ids = [r.request_id() for r in requests]
        if self._decoupled:
            self._fail_stream([r.get_response_sender() for r in requests], message, ids)
            return None
        return [pb_utils.InferenceResponse(error=pb_utils.TritonError(_with_id(message, i))) for i in ids]

    def _message(self, exc: BaseException) -> str:
        """The error text the client gets for an exception on the proxy's side of the channel."""
        if isinstance(exc, ChannelClosed):  # transport-level: say which model's channel broke
            return f"model {self._model_name!r}: the channel to the serving process broke ({exc})"
        if isinstance(exc, PyTritonTorchError):  # raised here, with the model named
            return str(exc)
        return f"{type(exc).__name__}: {exc}"

    def finalize(self) -> None:
        if self._decoupled:
            self._stopping = True
            self._reader_thread.join(timeout=2)
            self._fail_all_streams(f"model {self._model_name!r} is being unloaded")
        self._packer.close()
        self._reader.close()
        self._sock.close()


def _with_id(message: str, request_id: str) -> str:
    """The error text a client gets: the request id it set, if any, is appended so logs can be matched."""
    return f"{message} [request id: {request_id}]" if request_id else message


def _nbytes(value: Any) -> int:
    """Size of an input as it would cross the channel (BYTES: length-prefixed elements)."""
    if isinstance(value, np.ndarray) and value.dtype == np.object_:
        items = value.reshape(-1).tolist()
        return 4 * len(items) + sum(map(len, items))  # C-level: as_numpy() gives bytes elements
    return int(value.nbytes)

