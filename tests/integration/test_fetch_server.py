"""A real tritonserver run from the cache that ``pytriton-torch fetch-server --wheel`` fills.

Needs the real wheel file on this machine (no download in tests); point the variable at it::

    pip download nvidia-pytriton==0.7.0 --no-deps -d ~/wheels
    PYTRITON_TORCH_SERVER_WHEEL=~/wheels/nvidia_pytriton-0.7.0-py3-none-manylinux_2_35_x86_64.whl \
        pytest tests/integration/test_fetch_server.py
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from pytriton_torch._server._fetch import pinned_wheel
from tests.conftest import free_port

_SCRIPT = pathlib.Path(sys.executable).parent / "pytriton-torch"
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "pytriton_torch.cli"]
WHEEL = os.environ.get("PYTRITON_TORCH_SERVER_WHEEL", "")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (WHEEL and pathlib.Path(WHEEL).expanduser().is_file()),
        reason="set PYTRITON_TORCH_SERVER_WHEEL to the nvidia-pytriton 0.7.0 wheel file",
    ),
]

# Runs with nvidia-pytriton hidden (as if not installed): find_dist must take the fetched server.
_SERVE = textwrap.dedent(
    """
    import sys
    sys.modules["pytriton"] = None
    import numpy as np, psutil
    import tritonclient.http as httpclient
    from pytriton_torch import ModelConfig, Tensor, Triton, TritonConfig
    from pytriton_torch._server._dist import find_dist

    dist = find_dist()
    print("ROOT", dist.root)
    print("LIBS", dist.libs)

    def double(requests):
        return [{"y": r["x"] * 2} for r in requests]

    http, grpc, metrics = (int(p) for p in sys.argv[1:4])
    config = TritonConfig(http_port=http, grpc_port=grpc, metrics_port=metrics)
    with Triton(config=config) as triton:
        vec = [Tensor(name="x", dtype=np.float32, shape=(-1,))]
        out = [Tensor(name="y", dtype=np.float32, shape=(-1,))]
        triton.bind("double", double, vec, out, config=ModelConfig(max_batch_size=8))
        triton.run()
        servers = [p for p in psutil.Process().children(recursive=True) if p.name() == "tritonserver"]
        print("EXE", servers[0].exe())
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
        x = httpclient.InferInput("x", [1, 3], "FP32")
        x.set_data_from_numpy(np.array([[1, 2, 3]], dtype=np.float32))
        print("Y", client.infer("double", [x]).as_numpy("y").tolist())
    """
)


def test_server_from_the_fetched_cache_serves(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    fetched = subprocess.run(
        [*CLI, "fetch-server", "--wheel", str(pathlib.Path(WHEEL).expanduser())],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    cache = tmp_path / "xdg" / "pytriton_torch"
    (target,) = cache.iterdir()
    assert target.name == f"tritonserver-2.51-{pinned_wheel().sha256[:16]}"
    assert str(target) in fetched.stdout.replace("\n", "")

    ports = [str(free_port()) for _ in range(3)]
    served = subprocess.run(
        [sys.executable, "-c", _SERVE, *ports],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert served.returncode == 0, served.stdout + served.stderr
    lines = dict(line.split(" ", 1) for line in served.stdout.splitlines() if " " in line)
    assert lines["ROOT"] == str(target / "pytriton" / "tritonserver")
    assert lines["LIBS"] == str(target / "nvidia_pytriton.libs")
    assert lines["EXE"] == str(target / "pytriton" / "tritonserver" / "bin" / "tritonserver")
    assert lines["Y"] == "[[2.0, 4.0, 6.0]]"
