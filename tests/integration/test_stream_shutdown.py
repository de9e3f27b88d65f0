"""SIGTERM of a serving script while a gRPC stream is open: it exits within the exit timeout.

Open streams get most of ``exit_timeout_secs`` to finish and are cancelled after that; a client
stream left open with nothing in flight does not hold the shutdown either. The log says which.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.conftest import free_port

EXIT_TIMEOUT_S = 6
TOKEN_S = 0.5

SCRIPT = textwrap.dedent(
    """
    import logging, time
    import numpy as np
    from pytriton_torch import ModelConfig, Tensor, Triton, TritonConfig

    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")

    def tokens(requests):
        for i in range(int(requests[0]["n"].reshape(-1)[0])):
            time.sleep({token_s})
            yield [{{"y": np.full((1, 1), i, dtype=np.int32)}} for _ in requests]

    config = TritonConfig(http_port={http}, grpc_port={grpc}, metrics_port={metrics}, exit_timeout_secs={exit_timeout})
    with Triton(config=config) as triton:
        triton.bind(
            "tokens",
            tokens,
            [Tensor(name="n", dtype=np.int32, shape=(1,))],
            [Tensor(name="y", dtype=np.int32, shape=(1,))],
            config=ModelConfig(max_batch_size=1, decoupled=True),
        )
        print("READY", flush=True)
        triton.serve()
    print("BYE", flush=True)
    """
)


def _answer(got: Any) -> Any:
    if isinstance(got, InferenceServerException):
        return str(got)
    if got.get_response().parameters["triton_final_response"].bool_param:
        return None
    return int(got.as_numpy("y")[0, 0])


@pytest.mark.parametrize(
    ("tokens", "wait_for", "logged"),
    [
        (100, 1, "shutdown: cancelled 1 open stream(s)"),  # runs far past the exit timeout
        (4, 1, "shutdown: finished 1 open stream(s)"),  # ends within the grace period
        (2, 3, "idle client gRPC streams keep them unloading"),  # done; the stream stays open
    ],
    ids=["cancelled", "finished", "idle"],
)
def test_sigterm_with_an_open_stream_exits_in_time(
    tmp_path: Any, tokens: int, wait_for: int, logged: str
) -> None:
    grpc = free_port()
    script = tmp_path / "server.py"
    script.write_text(
        SCRIPT.format(
            http=free_port(), grpc=grpc, metrics=free_port(), exit_timeout=EXIT_TIMEOUT_S, token_s=TOKEN_S
        )
    )
    log = tmp_path / "server.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    client = None
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("READY")
        answers: queue.Queue[Any] = queue.Queue()
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
        client.start_stream(callback=lambda result, error: answers.put(_answer(error or result)))
        item = grpcclient.InferInput("n", [1, 1], "INT32")
        item.set_data_from_numpy(np.array([[tokens]], dtype=np.int32))
        client.async_stream_infer("tokens", [item], enable_empty_final_response=True)
        received = [answers.get(timeout=30) for _ in range(wait_for)]
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=EXIT_TIMEOUT_S + 30) == 0, log.read_text()[-3000:]
        took = time.monotonic() - signalled
        text = log.read_text()
        assert took < EXIT_TIMEOUT_S + 5, f"took {took:.1f}s\n{text[-3000:]}"
        assert logged in text, text[-3000:]
        assert "BYE" in proc.stdout.read()
        while not answers.empty():
            received.append(answers.get())
        if tokens == 100:  # the client was told why its stream ended
            assert any(isinstance(a, str) and "the server is stopping" in a for a in received), received
        elif tokens == 4:  # it got the whole stream
            assert received[:5] == [0, 1, 2, 3, None], received
    finally:
        if client is not None:
            client.close()
        if proc.poll() is None:
            proc.kill()
