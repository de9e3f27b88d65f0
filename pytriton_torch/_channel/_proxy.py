"""The Python-backend model that runs inside Triton's stub and forwards batches to the worker.

Triton loads ``<workspace>/models/<name>/1/model.py``, a two-line shim that imports
:class:`TritonPythonModel` from here. Each model instance connects to its own worker socket.
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import time
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

from .._dtypes import BF16_DTYPE
from . import _protocol as proto
from ._bytes import install_stub_helpers
from ._codec import Packer, unpack
from ._metrics import ChannelMetrics
from ._shm import ShmReader, ShmWriter, pid_alive
from ._transport import ClientEndpoint

_POLL_MS = 200

install_stub_helpers(pb_utils)  # this stub converts BYTES tensors with our vectorised codec


class _WorkerGone(Exception):
    pass


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
        self._sock = ClientEndpoint(params[proto.P_TRANSPORT], address, spin_us)
        prefix = f"{params[proto.P_SHM_PREFIX]}-{self._instance}-{os.getpid()}-req"
        self._writer = ShmWriter(prefix)
        self._packer = Packer(self._writer)
        self._reader = ShmReader()
        self._metrics = ChannelMetrics.create(pb_utils, self._model_name, instance_name)
        self._handshake(float(params[proto.P_CONNECT_TIMEOUT]))

    def _handshake(self, timeout_s: float) -> None:
        self._next_id += 1
        self._sock.send([proto.dumps({"t": proto.HELLO, "id": self._next_id, "pid": os.getpid()})])
        header, _ = self._receive(self._next_id, timeout_s)
        if header["t"] != proto.WELCOME:
            raise RuntimeError(f"model {self._model_name!r}: unexpected handshake answer {header['t']!r}")

    def _receive(self, expected_id: int, timeout_s: float | None) -> tuple[dict[str, Any], list[Any]]:
        """Wait for the answer to ``expected_id``; stale answers (to timed-out calls) are dropped."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if not self._sock.poll(_POLL_MS):
                if not pid_alive(self._owner_pid):
                    raise _WorkerGone(f"the process serving model {self._model_name!r} has exited")
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(
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
            if self._decoupled:
                self._stream(call_id, requests)
                return None
            answer, frames = self._receive(call_id, self._infer_timeout)
        except Exception as exc:  # every request of the batch gets the error; the model keeps serving
            return self._fail(requests, _message(exc))
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

    def _stream(self, call_id: int, requests: list[Any]) -> None:
        senders = [r.get_response_sender() for r in requests]
        flag = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        try:
            while True:
                answer, frames = self._receive(call_id, self._infer_timeout)
                kind = answer["t"]
                if kind == proto.PART:
                    for sender, group in zip(senders, answer["resps"], strict=True):
                        sender.send(self._response(group, frames, answer["seg"]))
                    self._sock.send([proto.dumps({"t": proto.ACK, "id": call_id})])
                elif kind == proto.END:
                    for sender in senders:
                        sender.send(flags=flag)
                    return
                else:
                    ids = [r.request_id() for r in requests]
                    self._fail_stream(senders, answer.get("msg", f"unexpected message {kind!r}"), ids)
                    return
        except Exception as exc:
            self._fail_stream(senders, _message(exc), [r.request_id() for r in requests])

    @staticmethod
    def _fail_stream(senders: list[Any], message: str, ids: list[str]) -> None:
        flag = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        for sender, request_id in zip(senders, ids, strict=True):
            error = pb_utils.TritonError(_with_id(message, request_id))
            sender.send(pb_utils.InferenceResponse(error=error), flags=flag)

    def _fail(self, requests: list[Any], message: str) -> list[Any] | None:
        ids = [r.request_id() for r in requests]
        if self._decoupled:
            self._fail_stream([r.get_response_sender() for r in requests], message, ids)
            return None
        return [pb_utils.InferenceResponse(error=pb_utils.TritonError(_with_id(message, i))) for i in ids]

    def finalize(self) -> None:
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


def _message(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, TimeoutError | _WorkerGone) else f"{type(exc).__name__}: {exc}"
