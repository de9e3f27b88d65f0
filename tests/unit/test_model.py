"""The native backend's settings file written for a bound model (pytriton_torch._model)."""

from __future__ import annotations

import pytest

from pytriton_torch._channel import _protocol as proto
from pytriton_torch._model import native_settings
from pytriton_torch.exceptions import PyTritonTorchValidationError

SETTINGS = {
    proto.P_IPC_DIR: "/tmp/ws/ipc",
    proto.P_SHM_PREFIX: "ptt-1-abc-m",
    proto.P_OWNER_PID: 42,
    proto.P_CONNECT_TIMEOUT: 60.0,
    proto.P_INFER_TIMEOUT: 0,
    proto.P_TRANSPORT: "unix",
    proto.P_SPIN_US: 250.0,
    proto.P_MAX_INPUT_BYTES: 1024,
    proto.P_MAX_STREAMS: 4,
}


def test_settings_are_key_value_lines_with_the_socket_path_without_its_instance() -> None:
    lines = dict(line.split("=", 1) for line in native_settings(SETTINGS, "m").splitlines())
    assert lines == {
        "endpoint": proto.endpoint("/tmp/ws/ipc", "m", 7).rsplit(".", 1)[0],
        "shm_prefix": "ptt-1-abc-m",
        "owner_pid": "42",
        "connect_timeout_s": "60.0",
        "infer_timeout_s": "0",
        "max_input_bytes": "1024",
        "spin_us": "250.0",
    }


def test_a_value_with_a_line_break_is_refused() -> None:
    with pytest.raises(PyTritonTorchValidationError, match="line break"):
        native_settings({**SETTINGS, proto.P_SHM_PREFIX: "a\nowner_pid=1"}, "m")
