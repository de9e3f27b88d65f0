"""The Python-backend model that runs inside Triton's stub and forwards batches to the worker.

Triton loads ``<workspace>/models/<name>/1/model.py``, a two-line shim that imports
:class:`TritonPythonModel` from here. Each model instance connects to its own worker socket.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

from . import _protocol as proto
from ._codec import Packer, unpack
from ._shm import ShmReader, ShmWriter
from ._transport import ClientEndpoint

_POLL_MS = 200


class _WorkerGone(Exception):
    pass


class TritonPythonModel:
    """Proxy model: one per Triton model instance, forwarding to the matching worker thread."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self._model_name = args["model_name"]
        instance_name = args["model_instance_name"]
        self._instance = int(instance_name.rsplit("_", 1)[1])
        self._owner_pid = int(params[proto.P_OWNER_PID])
        timeout = float(params.get(proto.P_INFER_TIMEOUT) or 0)
        self._infer_timeout = timeout if timeout > 0 else None
        self._decoupled = bool(config.get("model_transaction_policy", {}).get("decoupled"))
        self._outputs = {o["name"] for o in config.get("output", [])}
        self._next_id = 0

        address = proto.endpoint(params[proto.P_IPC_DIR], self._model_name, self._instance)
        spin_us = float(params.get(proto.P_SPIN_US) or 0)
        self._sock = ClientEndpoint(params.get(proto.P_TRANSPORT) or "unix", address, spin_us)
        prefix = f"{params[proto.P_SHM_PREFIX]}-{self._instance}-{os.getpid()}-req"
        self._packer = Packer(ShmWriter(prefix))
        self._reader = ShmReader()
        self._handshake(float(params.get(proto.P_CONNECT_TIMEOUT) or 60))

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
                if not _alive(self._owner_pid):
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
        self._next_id += 1
        call_id = self._next_id
        try:
            groups, meta = [], []
            for request in requests:
                groups.append({t.name(): t.as_numpy() for t in request.inputs()})
                meta.append(
                    [request.parameters(), sorted(request.requested_output_names()), request.request_id()]
                )
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
        return [self._response(group, frames, answer["seg"]) for group in answer["resps"]]

    def _response(self, descriptors: list[Any], frames: list[Any], segment: str) -> Any:
        arrays = unpack(descriptors, frames, segment, self._reader)
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(name, array) for name, array in arrays.items()]
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
                    self._fail_stream(senders, answer.get("msg", f"unexpected message {kind!r}"))
                    return
        except Exception as exc:
            self._fail_stream(senders, _message(exc))

    @staticmethod
    def _fail_stream(senders: list[Any], message: str) -> None:
        flag = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        for sender in senders:
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(message)), flags=flag)

    def _fail(self, requests: list[Any], message: str) -> list[Any] | None:
        if self._decoupled:
            self._fail_stream([r.get_response_sender() for r in requests], message)
            return None
        return [pb_utils.InferenceResponse(error=pb_utils.TritonError(message)) for _ in requests]

    def finalize(self) -> None:
        self._packer.close()
        self._reader.close()
        self._sock.close()


def _message(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, TimeoutError | _WorkerGone) else f"{type(exc).__name__}: {exc}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
