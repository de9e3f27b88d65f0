"""Repository mode for real: a generated model repository served by tritonserver, queried over HTTP/gRPC."""

from __future__ import annotations

import json
import pathlib
import re
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from pytriton_torch import RepositoryReport, Triton
from tests.integration.conftest import make_config
from tests.unit.test_repository import MODEL_PY, AddSub, Strings, addsub_config, tensors, write_model


class RowSums(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=-1)  # x arrives reshaped to [batch, 2, 2]


class Scaled(torch.nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


SERVED_EXTRA = """
instance_group [ { count: 2 kind: KIND_CPU } ]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 2000
  priority_levels: 2
  default_priority_level: 1
  default_queue_policy { timeout_action: REJECT max_queue_size: 64 }
}
model_warmup [ {
  name: "zeros" batch_size: 2
  inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } }
  inputs { key: "INPUT1" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } }
} ]
"""


def build_repository(repo: pathlib.Path) -> dict[str, Any]:
    write_model(repo, "addsub", addsub_config(extra=SERVED_EXTRA), {"model.pt": AddSub()})
    # seed 000 layout: model.py + model.py.pt, backend python + platform pytorch
    namespace: dict[str, Any] = {}
    exec(compile(MODEL_PY, "model.py", "exec"), namespace)
    torch.manual_seed(3)
    net = namespace["Net"]().eval()
    config = (
        'backend: "python"\nplatform: "pytorch"\nmax_batch_size: 4\n'
        f"input [ {tensors('x', 'TYPE_FP32', [3])} ]\n"
        f"output [ {tensors('y', 'TYPE_FP32', [2])} ]\n"
    )
    write_model(repo, "model_directory", config, {"model.py": MODEL_PY, "model.py.pt": net.state_dict()})
    versioned = write_model(
        repo,
        "versioned",
        addsub_config(("x",), ("OUTPUT__0",), extra="version_policy: { latest: { num_versions: 2 } }"),
        versions=(),
    )
    for version in (1, 2, 3):
        (versioned / str(version)).mkdir()
        torch.jit.save(torch.jit.script(Scaled(float(version))), str(versioned / str(version) / "model.pt"))
    strings = addsub_config(("INPUT0",), ("OUTPUT__0",), dtype="TYPE_STRING").replace(
        "dims: [ 4 ]", "dims: [ 1 ]"
    )
    write_model(repo, "strings", strings, {"model.pt": Strings()})
    exported = write_model(repo, "exported", addsub_config().replace("pytorch_libtorch", "torch_aoti"))
    batch = torch.export.Dim("batch", min=1, max=8)
    program = torch.export.export(
        AddSub(), (torch.ones(2, 4), torch.ones(2, 4)), dynamic_shapes=({0: batch}, {0: batch})
    )
    torch.export.save(program, str(exported / "1" / "model.pt2"))
    reshaped = (
        'platform: "pytorch_libtorch"\nmax_batch_size: 4\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] reshape: { shape: [ 2, 2 ] } } ]\n'
        'output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]\n'
    )
    write_model(repo, "reshaped", reshaped, {"model.pt": RowSums()})
    decoupled = addsub_config(extra="model_transaction_policy { decoupled: true }")
    write_model(repo, "decoupled", decoupled, {"model.pt": AddSub()})
    halves = 'backend: "pytorch"\nruntime: "model.py"\nmax_batch_size: 4\n'
    halves += f"input [ {tensors('x', 'TYPE_BF16', [4])} ]\noutput [ {tensors('y', 'TYPE_BF16', [4])} ]\n"
    doubling = "import torch\nclass Double(torch.nn.Module):\n    def forward(self, x):\n        assert x.dtype == torch.bfloat16\n        return x * 2\n"
    write_model(repo, "bf16", halves, {"model.py": doubling})
    write_model(repo, "bad_index", addsub_config(outputs=("OUTPUT__0", "OUTPUT__5")), {"model.pt": AddSub()})
    # models that fail to load, each for its own reason
    write_model(repo, "uint32", addsub_config(dtype="TYPE_UINT32"), {"model.pt": AddSub()})
    write_model(repo, "no_file", addsub_config())
    write_model(
        repo, "bad_bool", addsub_config(parameters={"INFERENCE_MODE": "sometimes"}), {"model.pt": AddSub()}
    )
    write_model(
        repo,
        "escape",
        addsub_config(extra='default_model_filename: "../../etc/passwd"'),
        {"model.pt": AddSub()},
    )
    return {"net": net}


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Triton, RepositoryReport, dict[str, Any]]]:
    repo = tmp_path_factory.mktemp("repo")
    extras = build_repository(repo)
    events: list[tuple[str, str, str]] = []
    with Triton(config=make_config()) as triton:
        report = triton.load_repository(repo, on_event=lambda *event: events.append(event))
        extras["events"] = events
        extras["repo"] = repo
        yield triton, report, extras


@pytest.fixture(scope="module")
def http(served: tuple[Triton, RepositoryReport, dict[str, Any]]) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(served[0].http_url.removeprefix("http://"), concurrency=8)


def infer(
    client: Any, model: str, inputs: dict[str, np.ndarray], module: Any = httpclient, **kwargs: Any
) -> Any:
    tensors_in = []
    for name, array in inputs.items():
        datatype = "BYTES" if array.dtype == object else {np.float32: "FP32"}[array.dtype.type]
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors_in.append(tensor)
    return client.infer(model, tensors_in, **kwargs)


A = np.arange(8, dtype=np.float32).reshape(2, 4)
B = np.full((2, 4), 3, dtype=np.float32)


def test_report_and_failures_with_reasons(served: tuple[Triton, RepositoryReport, dict[str, Any]]) -> None:
    _, report, extras = served
    repo = extras["repo"]
    assert sorted(report.loaded) == [
        "addsub",
        "bad_index",
        "bf16",
        "decoupled",
        "exported",
        "model_directory",
        "reshaped",
        "strings",
        "versioned",
    ]
    assert report.failed == {
        "uint32": "unsupported datatype TYPE_UINT32 for input 'INPUT0' for model 'uint32'",
        "no_file": f"unable to find '{repo / 'no_file' / '1' / 'model.pt'}' for model instance 'no_file'",
        "bad_bool": "model 'bad_bool': parameter INFERENCE_MODE: failed to convert 'sometimes' to boolean",
        "escape": "model 'escape': default_model_filename '../../etc/passwd' must be a file name inside the "
        "version folder; refused",
    }
    stages = [stage for model, stage, _ in extras["events"] if model == "addsub"]
    assert stages == ["parse", "load", "warmup", "ready"]
    assert ("uint32", "failed", report.failed["uint32"]) in extras["events"]


def test_torchscript_over_http_and_grpc(
    served: tuple[Triton, RepositoryReport, dict[str, Any]], http: Any
) -> None:
    result = infer(http, "addsub", {"INPUT0": A, "INPUT1": B})
    np.testing.assert_array_equal(result.as_numpy("OUTPUT__0"), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT__1"), A - B)
    grpc = grpcclient.InferenceServerClient(served[0].grpc_url.removeprefix("grpc://"))
    result = infer(grpc, "addsub", {"INPUT0": A, "INPUT1": B}, module=grpcclient, priority=1)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT__1"), A - B)


def test_user_config_fields_are_kept(http: Any) -> None:
    config = http.get_model_config("addsub")
    batching = config["dynamic_batching"]
    assert batching["preferred_batch_size"] == [4, 8]
    assert batching["priority_levels"] == 2 and batching["default_priority_level"] == 1
    assert batching["default_queue_policy"]["max_queue_size"] == 64
    # model_warmup is the exception: its samples ran in this process before the load; a served
    # config with them would make Triton run them again, and a failing one can crash tritonserver
    assert config.get("model_warmup", []) == []
    assert config["instance_group"][0]["count"] == 2
    assert config["backend"] == "python" and config["platform"] == ""


def test_batches_are_gathered_and_scattered(http: Any) -> None:
    sizes = [1, 2, 3, 1, 2, 3, 1, 2]
    pending = []
    for i, n in enumerate(sizes):
        first = httpclient.InferInput("INPUT0", [n, 4], "FP32")
        first.set_data_from_numpy(np.full((n, 4), i, np.float32))
        second = httpclient.InferInput("INPUT1", [n, 4], "FP32")
        second.set_data_from_numpy(np.full((n, 4), 100, np.float32))
        pending.append(http.async_infer("addsub", [first, second]))
    for i, (n, request) in enumerate(zip(sizes, pending, strict=True)):
        result = request.get_result().as_numpy("OUTPUT__1")
        np.testing.assert_array_equal(result, np.full((n, 4), i - 100, np.float32))
    stats = http.get_inference_statistics("addsub")["model_stats"][0]
    assert stats["inference_count"] >= sum(sizes)


def test_seed_layout_model_directory(
    served: tuple[Triton, RepositoryReport, dict[str, Any]], http: Any
) -> None:
    x = np.random.default_rng(1).random((3, 3), dtype=np.float32)
    with torch.no_grad():
        expected = served[2]["net"](torch.from_numpy(x))["y"].numpy()
    np.testing.assert_allclose(infer(http, "model_directory", {"x": x}).as_numpy("y"), expected, rtol=1e-6)


def test_version_folders(http: Any) -> None:
    x = np.ones((1, 4), np.float32)
    for version in ("2", "3"):
        result = infer(http, "versioned", {"x": x}, model_version=version)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT__0"), x * int(version))
    np.testing.assert_array_equal(infer(http, "versioned", {"x": x}).as_numpy("OUTPUT__0"), x * 3)
    with pytest.raises(InferenceServerException, match=r"unavailable|not found|unknown"):
        infer(http, "versioned", {"x": x}, model_version="1")  # latest 2: version 1 is not served


def test_strings_and_exported_program(http: Any) -> None:
    words = np.array([[b"triton"], [b"torch"]], dtype=object)
    assert infer(http, "strings", {"INPUT0": words}).as_numpy("OUTPUT__0").tolist() == [
        [b"TRITON"],
        [b"TORCH"],
    ]
    result = infer(http, "exported", {"INPUT0": A, "INPUT1": B})
    np.testing.assert_array_equal(result.as_numpy("OUTPUT__0"), A + B)


def test_errors_reach_the_client_and_the_server_keeps_serving(http: Any) -> None:
    with pytest.raises(
        InferenceServerException,
        match=re.escape("refers to an output index which doesn't exist. This model has 2 outputs"),
    ):
        infer(http, "bad_index", {"INPUT0": A, "INPUT1": B})
    with pytest.raises(InferenceServerException, match="INPUT1"):
        infer(http, "addsub", {"INPUT0": A})
    np.testing.assert_array_equal(
        infer(http, "addsub", {"INPUT0": A, "INPUT1": B}).as_numpy("OUTPUT__0"), A + B
    )


def test_load_before_start_reports_models_triton_refuses(tmp_path: pathlib.Path) -> None:
    write_model(tmp_path, "good", addsub_config(), {"model.pt": AddSub()})
    # Triton itself refuses a preferred batch size above max_batch_size: found when the server loads it.
    refused = addsub_config(max_batch_size=4, extra="dynamic_batching { preferred_batch_size: [ 16 ] }")
    write_model(tmp_path, "refused", refused, {"model.pt": AddSub()})
    events: list[tuple[str, str, str]] = []
    triton = Triton(config=make_config())
    report = triton.load_repository(tmp_path, on_event=lambda *event: events.append(event))
    assert sorted(report.loaded) == ["good", "refused"]
    assert ("good", "ready", "loads when the server starts") in events
    with triton:
        assert report.loaded == ["good"]
        assert (
            "refused" in report.failed
            and "preferred size must be <= max batch size" in report.failed["refused"]
        )
        assert events[-1][:2] == ("refused", "failed")
        client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
        np.testing.assert_array_equal(
            infer(client, "good", {"INPUT0": A, "INPUT1": B}).as_numpy("OUTPUT__0"), A + B
        )


def test_model_py_text_is_not_imported_from_the_workspace(
    served: tuple[Triton, RepositoryReport, dict[str, Any]],
) -> None:
    triton = served[0]
    assert triton.workspace is not None
    shim = (triton.workspace.models / "versioned" / "3" / "model.py").read_text()
    assert "TritonPythonModel(_Proxy)" in shim and textwrap.dedent(MODEL_PY) not in shim


def test_reshape_is_applied_before_the_module(http: Any) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    result = infer(http, "reshaped", {"x": x}).as_numpy("OUTPUT__0")
    np.testing.assert_array_equal(result, x.reshape(2, 2, 2).sum(axis=-1))


def test_decoupled_model_answers_over_a_stream(
    served: tuple[Triton, RepositoryReport, dict[str, Any]],
) -> None:
    import queue

    answers: queue.Queue[Any] = queue.Queue()
    client = grpcclient.InferenceServerClient(served[0].grpc_url.removeprefix("grpc://"))
    client.start_stream(callback=lambda result, error: answers.put(error or result))
    try:
        tensors_in = []
        for name, array in (("INPUT0", A), ("INPUT1", B)):
            tensor = grpcclient.InferInput(name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(array)
            tensors_in.append(tensor)
        client.async_stream_infer("decoupled", tensors_in)
        answer = answers.get(timeout=30)
    finally:
        client.stop_stream()
    assert not isinstance(answer, Exception), answer
    np.testing.assert_array_equal(answer.as_numpy("OUTPUT__0"), A + B)


def test_bf16_end_to_end(http: Any) -> None:
    import ml_dtypes

    x = np.array([[0.5, 1.5, -2.0, 3.25]], dtype=ml_dtypes.bfloat16)
    tensor = httpclient.InferInput("x", [1, 4], "BF16")
    tensor.set_data_from_numpy(x)
    result = http.infer("bf16", [tensor]).as_numpy("y")
    np.testing.assert_array_equal(result.astype(np.float32), x.astype(np.float32) * 2)


# -- warm-ups of repository models run in this process, never in Triton ---------------------------

COLD_PY = textwrap.dedent(
    """
    import torch


    class Cold(torch.nn.Module):
        def forward(self, x):
            if not bool(x.any()):
                raise ValueError("this model refuses an all-zero input")
            return x * 2
    """
)
COLD_CONFIG = (
    'backend: "pytorch"\nruntime: "model.py"\nmax_batch_size: 4\n'
    f"input [ {tensors('x', 'TYPE_FP32', [4])} ]\noutput [ {tensors('y', 'TYPE_FP32', [4])} ]\n"
    'model_warmup [ { name: "zeros" batch_size: 2\n'
    '  inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } } ]\n'
)


def _cold_reason_is_named(reason: str) -> bool:
    return "warm-up sample 'zeros'" in reason and "refuses an all-zero input" in reason


def test_failing_repository_warmups_never_take_the_server_down(tmp_path: pathlib.Path) -> None:
    """tritonserver 2.51 crashes (SIGSEGV) after a few loads whose warm-up fails: Triton never runs one."""
    write_model(tmp_path, "good", addsub_config(), {"model.pt": AddSub()})
    write_model(tmp_path, "cold", COLD_CONFIG, {"model.py": COLD_PY})
    triton = Triton(config=make_config())
    report = triton.load_repository(tmp_path)  # before start: the samples run when the server starts
    with triton:
        assert report.loaded == ["good"] and list(report.failed) == ["cold"]
        assert _cold_reason_is_named(report.failed["cold"]), report.failed["cold"]
        client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
        stop = threading.Event()
        answers: list[bool] = []

        def ask() -> None:
            own = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
            while not stop.is_set():
                try:
                    result = infer(own, "good", {"INPUT0": A, "INPUT1": B}).as_numpy("OUTPUT__0")
                    answers.append(bool(np.array_equal(result, A + B)))
                except Exception:
                    answers.append(False)
                time.sleep(0.01)

        thread = threading.Thread(target=ask)
        thread.start()
        try:
            for attempt in range(25):
                again = triton.load_repository(tmp_path, models=["cold"])
                assert again.loaded == [] and list(again.failed) == ["cold"]
                assert _cold_reason_is_named(again.failed["cold"]), again.failed["cold"]
                assert triton.is_alive(), f"tritonserver died at failing load {attempt + 1}"
        finally:
            stop.set()
            thread.join()
        assert answers and all(answers), f"{answers.count(False)} of {len(answers)} requests failed"
        assert not client.is_model_ready("cold")
        np.testing.assert_array_equal(
            infer(client, "good", {"INPUT0": A, "INPUT1": B}).as_numpy("OUTPUT__0"), A + B
        )


RECORDING_PY = textwrap.dedent(
    """
    import json
    import torch

    VERSION = {version}


    class Recording(torch.nn.Module):
        def forward(self, x, s):
            with open({log!r}, "a") as out:
                out.write(json.dumps([VERSION, x.tolist(), s]) + "\\n")
            return x * 2
    """
)


def test_input_data_file_samples_are_read_and_fed_per_version_and_instance(tmp_path: pathlib.Path) -> None:
    repo, log = tmp_path / "repo", tmp_path / "seen.jsonl"
    config = (
        'backend: "pytorch"\nruntime: "model.py"\nmax_batch_size: 4\n'
        "version_policy: { all: { } }\ninstance_group [ { count: 2 kind: KIND_CPU } ]\n"
        f"input [ {tensors('x', 'TYPE_FP32', [4])}, {tensors('s', 'TYPE_STRING', [2])} ]\n"
        f"output [ {tensors('y', 'TYPE_FP32', [4])} ]\n"
        'model_warmup [ { name: "from_files" batch_size: 2\n'
        '  inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 4 ] input_data_file: "x.bin" } }\n'
        '  inputs { key: "s" value: { data_type: TYPE_STRING dims: [ 2 ] input_data_file: "s.bin" } } } ]\n'
    )
    folder = write_model(repo, "filed", config, versions=())
    for version in (1, 2):
        (folder / str(version)).mkdir()
        (folder / str(version) / "model.py").write_text(RECORDING_PY.format(version=version, log=str(log)))
    (folder / "warmup").mkdir()
    values = [1.5, 2.5, -3.0, 4.0]
    # a longer file is fine, as in Triton: the leading bytes are used
    (folder / "warmup" / "x.bin").write_bytes(np.array(values, np.float32).tobytes() + b"tail")
    (folder / "warmup" / "s.bin").write_bytes(b"\x06\x00\x00\x00h\xc3\xa9llo" + b"\x00\x00\x00\x00")
    with Triton(config=make_config()) as triton:
        report = triton.load_repository(repo)
        assert report.failed == {} and report.loaded == ["filed"]
        seen = sorted((v, x, s) for v, x, s in map(json.loads, log.read_text().splitlines()))
        # every instance of every version got the sample: batch_size requests, the files' values
        fed = ([values, values], ["héllo", "", "héllo", ""])
        assert seen == [(1, *fed), (1, *fed), (2, *fed), (2, *fed)]
        client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
        # Triton is not given the samples (it would run them again, and a failing one can crash it)
        assert client.get_model_config("filed").get("model_warmup", []) == []
        x = np.ones((1, 4), np.float32)
        words = np.array([[b"a", b"b"]], dtype=object)
        result = infer(client, "filed", {"x": x, "s": words}, model_version="2").as_numpy("y")
        np.testing.assert_array_equal(result, x * 2)


def test_warmup_data_files_cannot_leave_the_model_folder(tmp_path: pathlib.Path) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(4, np.float32).tobytes())
    repo = tmp_path / "repo"
    sample = (
        'model_warmup [ { name: "outside" batch_size: 1\n'
        '  inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 4 ] input_data_file: "FILE" } } } ]\n'
    )
    base = (
        'backend: "pytorch"\nruntime: "model.py"\nmax_batch_size: 4\n'
        f"input [ {tensors('x', 'TYPE_FP32', [4])} ]\noutput [ {tensors('y', 'TYPE_FP32', [4])} ]\n"
    )
    doubling = (
        "import torch\nclass Double(torch.nn.Module):\n    def forward(self, x):\n        return x * 2\n"
    )
    write_model(repo, "dotdot", base + sample.replace("FILE", "../../secret.bin"), {"model.py": doubling})
    linked = write_model(repo, "linked", base + sample.replace("FILE", "link.bin"), {"model.py": doubling})
    (linked / "warmup").mkdir()
    (linked / "warmup" / "link.bin").symlink_to(secret)
    mismatch = sample.replace("TYPE_FP32", "TYPE_INT32").replace('input_data_file: "FILE"', "zero_data: true")
    write_model(repo, "mismatch", base + mismatch, {"model.py": doubling})
    write_model(repo, "good", base, {"model.py": doubling})
    triton = Triton(config=make_config())
    report = triton.load_repository(repo)  # before start: a bad sample must not fail the start
    with triton:
        assert report.loaded == ["good"]
        assert sorted(report.failed) == ["dotdot", "linked", "mismatch"]
        client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
        x = np.ones((1, 4), np.float32)
        np.testing.assert_array_equal(infer(client, "good", {"x": x}).as_numpy("y"), x * 2)
    assert "warm-up sample 'outside'" in report.failed["dotdot"] and "refused" in report.failed["dotdot"]
    assert "outside the model folder" in report.failed["linked"], report.failed["linked"]
    assert "INT32" in report.failed["mismatch"] and "FP32" in report.failed["mismatch"]
