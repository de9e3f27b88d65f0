"""Request: the cancellation flag of streaming requests and copies with other inputs."""

from __future__ import annotations

import threading

import numpy as np

from pytriton_torch import Request


def test_a_request_is_not_cancelled_unless_its_stream_is() -> None:
    request = Request({"x": np.zeros(2)})
    assert request.is_cancelled() is False
    flag = threading.Event()
    request._cancelled = flag  # what the channel does for a streaming request
    assert request.is_cancelled() is False
    flag.set()
    assert request.is_cancelled() is True


def test_with_data_keeps_parameters_id_and_cancellation() -> None:
    flag = threading.Event()
    request = Request({"x": np.zeros(2)}, {"p": 1}, ["y"], "id-1")
    request._cancelled = flag
    copy = request.with_data({"z": np.ones(1)})
    assert list(copy) == ["z"] and copy.parameters == {"p": 1}
    assert copy.requested_output_names == ["y"] and copy.request_id == "id-1"
    flag.set()
    assert copy.is_cancelled() is True
