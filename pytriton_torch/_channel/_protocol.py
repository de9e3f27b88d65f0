"""Message kinds and settings keys shared by the proxy (stub side) and the worker.

Every message is ``[header, *frames]``; ``header`` is a msgpack map with ``t`` (kind) and ``id``.

stub -> worker: ``hello`` (connect check), ``infer`` (a batch), ``ack`` (stream chunk consumed),
``cancel`` (stop a stream: its clients went away or it timed out; ``why`` says which)
worker -> stub: ``welcome``, ``ok`` (responses), ``err`` (the batch failed), ``part`` (one
stream chunk), ``end`` (stream finished)

Several streams of one instance may be open at once; every message names its call by ``id``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack

HELLO = "hello"
WELCOME = "welcome"
INFER = "infer"
OK = "ok"
ERR = "err"
PART = "part"
ACK = "ack"
END = "end"
CANCEL = "cancel"

# The proxy's settings: a JSON file (mode 0600) in the model folder, with these keys. Not config.pbtxt
# parameters: those are shown to anyone who asks for the model config.
SETTINGS_FILE = "pytriton_torch.json"
P_IPC_DIR = "ipc_dir"
P_SHM_PREFIX = "shm_prefix"
P_OWNER_PID = "owner_pid"
P_CONNECT_TIMEOUT = "connect_timeout_s"
P_INFER_TIMEOUT = "infer_timeout_s"
P_TRANSPORT = "transport"
P_SPIN_US = "spin_us"
P_MAX_INPUT_BYTES = "max_input_bytes"
P_MAX_STREAMS = "max_concurrent_streams"

# The native backend (pytriton_torch/_server/_backend.c) reads its settings from this file instead:
# ``key=value`` lines (no JSON parser in C), mode 0600, beside the JSON file.
NATIVE_SETTINGS_FILE = "pytriton_torch.conf"
NATIVE_BACKEND = "pytriton_torch"
"""The native backend's name: ``backend: "pytriton_torch"`` loads ``libtriton_pytriton_torch.so``."""


def endpoint(ipc_dir: str, model_name: str, instance: int) -> str:
    """Socket path of one model instance's worker (short: socket paths are limited to 107 bytes)."""
    digest = hashlib.sha1(model_name.encode()).hexdigest()[:12]
    return f"{ipc_dir}/{digest}.{instance}"


def dumps(header: dict[str, Any]) -> bytes:
    return msgpack.packb(header, use_bin_type=True)  # type: ignore[no-any-return]


def loads(raw: Any) -> dict[str, Any]:
    return msgpack.unpackb(raw, raw=False)  # type: ignore[no-any-return]
