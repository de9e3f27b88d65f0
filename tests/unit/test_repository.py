"""Repository mode without a server: config checks, conventions, parameters, loaders, runners.

The models are generated here (scripted AddSub-style modules, a model.py with a saved state_dict,
an exported program); the cases follow the upstream QA suites listed in the reference.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import stat
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch

from pytriton_torch._repository import _params
from pytriton_torch._repository._config import parse_config, select_versions
from pytriton_torch._repository._loader import PreparedModel, prepare_model
from pytriton_torch._repository._params import parse_bool
from pytriton_torch._types import Request
from pytriton_torch.exceptions import PyTritonTorchError, PyTritonTorchModelError

# -- generated models ----------------------------------------------------------------------------


class AddSub(torch.nn.Module):
    """Not symmetric in its inputs, so a swapped input order shows in the results."""

    def forward(self, INPUT0: torch.Tensor, INPUT1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return INPUT0 + INPUT1, INPUT0 - INPUT1


class DictInput(torch.nn.Module):
    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return inputs["a"] * 10 + inputs["b"]


class Strings(torch.nn.Module):
    def forward(self, INPUT0: list[str]) -> list[str]:
        return [s.upper() for s in INPUT0]


class ScalarOut(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum()


class Methods(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x * 100


MODEL_PY = textwrap.dedent(
    """
    import torch
    from torch.nn import Linear  # imported: must not be picked as the model class


    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = Linear(3, 2)

        def forward(self, x):
            return self.lin(x)


    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Block()

        def forward(self, x):
            return {"y": self.block(x), "double": x * 2}
    """
)


def tensors(name: str, dtype: str, dims: Sequence[int], **extra: str) -> str:
    fields = " ".join(f"{key}: {value}" for key, value in extra.items())
    return f'{{ name: "{name}" data_type: {dtype} dims: [ {", ".join(map(str, dims))} ] {fields} }}'


def write_model(
    repo: pathlib.Path,
    name: str,
    config: str,
    files: dict[str, Any] | None = None,
    versions: Sequence[int] = (1,),
) -> pathlib.Path:
    """A model folder: ``config.pbtxt`` and, per version, files (module -> scripted, str -> text)."""
    folder = repo / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(config)
    for version in versions:
        vdir = folder / str(version)
        vdir.mkdir(exist_ok=True)
        for file_name, content in (files or {}).items():
            if isinstance(content, torch.nn.Module):
                torch.jit.save(torch.jit.script(content), str(vdir / file_name))
            elif isinstance(content, bytes):
                (vdir / file_name).write_bytes(content)
            elif isinstance(content, str):
                (vdir / file_name).write_text(content)
            else:
                torch.save(content, vdir / file_name)
    return folder


def addsub_config(
    inputs: Sequence[str] = ("INPUT0", "INPUT1"),
    outputs: Sequence[str] = ("OUTPUT__0", "OUTPUT__1"),
    *,
    dtype: str = "TYPE_FP32",
    max_batch_size: int = 8,
    extra: str = "",
    parameters: dict[str, str] | None = None,
) -> str:
    params = "".join(
        f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'
        for key, value in (parameters or {}).items()
    )
    return (
        'platform: "pytorch_libtorch"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [ {', '.join(tensors(n, dtype, [4]) for n in inputs)} ]\n"
        f"output [ {', '.join(tensors(n, dtype, [4]) for n in outputs)} ]\n"
        f"{params}{extra}\n"
    )


def run(
    prepared: PreparedModel, *requests: dict[str, np.ndarray], version: int | None = None
) -> list[dict[str, np.ndarray]]:
    runners = prepared.runners[version or max(prepared.runners)]
    return runners[0]([Request(dict(r)) for r in requests])


A = np.arange(8, dtype=np.float32).reshape(2, 4)
B = np.full((2, 4), 3, dtype=np.float32)


# -- config parsing ------------------------------------------------------------------------------


def test_unknown_field_is_named(tmp_path: pathlib.Path) -> None:
    folder = write_model(tmp_path, "m", addsub_config(extra="max_batch_sise: 3"), {"model.pt": AddSub()})
    with pytest.raises(
        PyTritonTorchModelError, match=r"model 'm': config.pbtxt: .*has no field named \"max_batch_sise\""
    ):
        parse_config(folder)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("sequence_batching { }", "sequence_batching"),
        ('ensemble_scheduling { step [ { model_name: "x" model_version: -1 } ] }', "ensemble_scheduling"),
        (
            'batch_input [ { kind: BATCH_ELEMENT_COUNT target_name: "n" data_type: TYPE_INT32 } ]',
            "batch_input",
        ),
        ("instance_group [ { count: 1 passive: true } ]", "instance_group.passive"),
    ],
)
def test_unsupported_fields_are_refused(tmp_path: pathlib.Path, extra: str, field: str) -> None:
    folder = write_model(tmp_path, "m", addsub_config(extra=extra), {"model.pt": AddSub()})
    with pytest.raises(PyTritonTorchModelError, match=rf"model 'm': config field '{field}' .*not supported"):
        parse_config(folder)


def test_ignored_field_gives_a_warning(tmp_path: pathlib.Path) -> None:
    extra = 'optimization { execution_accelerators { gpu_execution_accelerator [ { name: "tensorrt" } ] } }'
    folder = write_model(tmp_path, "m", addsub_config(extra=extra), {"model.pt": AddSub()})
    assert parse_config(folder).warnings == [
        "model 'm': config field 'optimization' is ignored: backend accelerators (TensorRT, OpenVINO) "
        "do not apply to torch modules"
    ]


def test_name_must_match_folder_and_backend_must_be_pytorch(tmp_path: pathlib.Path) -> None:
    folder = write_model(tmp_path, "m", 'name: "other"\n' + addsub_config())
    with pytest.raises(
        PyTritonTorchModelError, match="names the model 'other'; the name must match its folder"
    ):
        parse_config(folder)
    folder = write_model(tmp_path, "onnx", 'backend: "onnxruntime"\n' + addsub_config().split("\n", 1)[1])
    with pytest.raises(
        PyTritonTorchModelError, match="backend 'onnxruntime' is not served by pytriton-torch"
    ):
        parse_config(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PyTritonTorchModelError, match=re.escape("model 'empty': no config.pbtxt")):
        parse_config(empty)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("", [3]),
        ("version_policy: { latest: { num_versions: 2 } }", [2, 3]),
        ("version_policy: { all: { } }", [1, 2, 3]),
        ("version_policy: { specific: { versions: [ 1, 3 ] } }", [1, 3]),
    ],
)
def test_version_policy(tmp_path: pathlib.Path, policy: str, expected: list[int]) -> None:
    folder = write_model(tmp_path, "m", addsub_config(extra=policy), versions=(1, 2, 3))
    (folder / "notes").mkdir()  # not a version folder
    assert select_versions(parse_config(folder)) == expected


def test_missing_specific_version_and_no_version_folder(tmp_path: pathlib.Path) -> None:
    folder = write_model(
        tmp_path, "m", addsub_config(extra="version_policy: { specific: { versions: [ 4 ] } }")
    )
    with pytest.raises(
        PyTritonTorchModelError, match=r"asks for version\(s\) \[4\] but the folder has \[1\]"
    ):
        select_versions(parse_config(folder))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.pbtxt").write_text(addsub_config())
    with pytest.raises(PyTritonTorchModelError, match="model 'bare': no version folder"):
        select_versions(parse_config(bare))


# -- file selection and safety -------------------------------------------------------------------


def test_missing_model_file_upstream_message(tmp_path: pathlib.Path) -> None:
    folder = write_model(tmp_path, "m", addsub_config())
    with pytest.raises(PyTritonTorchModelError) as info:
        prepare_model(folder)
    assert info.value.message == f"unable to find '{folder / '1' / 'model.pt'}' for model instance 'm'"


def test_default_model_filename_cannot_leave_the_model_folder(tmp_path: pathlib.Path) -> None:
    folder = write_model(
        tmp_path,
        "m",
        addsub_config(extra='default_model_filename: "../../etc/passwd"'),
        {"model.pt": AddSub()},
    )
    with pytest.raises(
        PyTritonTorchModelError,
        match=re.escape("default_model_filename '../../etc/passwd' must be a file name inside"),
    ):
        prepare_model(folder)


def test_symlinks_out_of_the_model_folder_are_refused(tmp_path: pathlib.Path) -> None:
    outside = tmp_path / "outside.pt"
    torch.jit.save(torch.jit.script(AddSub()), str(outside))
    folder = write_model(tmp_path / "repo", "m", addsub_config())
    os.symlink(outside, folder / "1" / "model.pt")
    with pytest.raises(
        PyTritonTorchModelError,
        match=r"model 'm': .*model.pt resolves to .*outside.pt, outside the model folder",
    ):
        prepare_model(folder)
    os.symlink("/etc/passwd", folder / "1" / "model.py.pt")
    (folder / "1" / "model.py").write_text(MODEL_PY)
    folder.joinpath("config.pbtxt").write_text(
        'backend: "python"\nplatform: "pytorch"\n' + addsub_config().split("\n", 1)[1]
    )
    with pytest.raises(PyTritonTorchModelError, match="resolves to /etc/passwd, outside the model folder"):
        prepare_model(folder)


def test_config_symlinked_out_is_refused(tmp_path: pathlib.Path) -> None:
    outside = tmp_path / "config.pbtxt"
    outside.write_text(addsub_config())
    folder = tmp_path / "repo" / "m"
    (folder / "1").mkdir(parents=True)
    os.symlink(outside, folder / "config.pbtxt")
    with pytest.raises(PyTritonTorchModelError, match="outside the model folder"):
        parse_config(folder)


def test_symlink_inside_the_model_folder_is_fine(tmp_path: pathlib.Path) -> None:
    folder = write_model(tmp_path, "m", addsub_config(), {"real.pt": AddSub()})
    os.symlink(folder / "1" / "real.pt", folder / "1" / "model.pt")
    assert prepare_model(folder).runners[1]


# -- input / output naming (L0_libtorch_io_names) ------------------------------------------------

SUM, DIFF = A + B, A - B


@pytest.mark.parametrize(
    ("inputs", "outputs", "feed", "expected", "convention"),
    [
        # 1. indexes for inputs and outputs
        (("INPUT__0", "INPUT__1"), ("OUTPUT__0", "OUTPUT__1"), (A, B), (SUM, DIFF), "NAMED_INDEX"),
        # 2. forward argument names
        (("INPUT0", "INPUT1"), ("OUTPUT__0", "OUTPUT__1"), (A, B), (SUM, DIFF), "FORWARD_ARGUMENT"),
        # 3. argument names listed in another order: still matched by name
        (("INPUT1", "INPUT0"), ("OUTPUT__0", "OUTPUT__1"), (B, A), (SUM, DIFF), "FORWARD_ARGUMENT"),
        # 4. neither: config order, outputs in config order
        (("X", "Y"), ("SUM", "DIFF"), (A, B), (SUM, DIFF), "STRICT_CONFIG_ORDERING"),
        # 5. different prefixes, one index each
        (("foo__0", "bar__1"), ("OUTPUT__0", "OUTPUT__1"), (A, B), (SUM, DIFF), "NAMED_INDEX"),
        # 6. unordered indexes
        (("INPUT__1", "INPUT__0"), ("OUTPUT__1", "OUTPUT__0"), (B, A), (DIFF, SUM), "NAMED_INDEX"),
        # 7. a mix of an argument name and an index: config order
        (("INPUT0", "INPUT__1"), ("OUTPUT__0", "OUTPUT__1"), (A, B), (SUM, DIFF), "STRICT_CONFIG_ORDERING"),
        # 8. argument names in, unindexed outputs in config order
        (("INPUT0", "INPUT1"), ("DIFF_FIRST", "SUM_SECOND"), (A, B), (SUM, DIFF), "FORWARD_ARGUMENT"),
    ],
)
def test_naming_variants(
    tmp_path: pathlib.Path,
    inputs: tuple[str, str],
    outputs: tuple[str, str],
    feed: tuple[np.ndarray, np.ndarray],
    expected: tuple[np.ndarray, np.ndarray],
    convention: str,
) -> None:
    folder = write_model(tmp_path, "m", addsub_config(inputs, outputs), {"model.pt": AddSub()})
    prepared = prepare_model(folder)
    assert prepared.runners[1][0].plan.convention == convention
    (result,) = run(prepared, dict(zip(inputs, feed, strict=True)))
    np.testing.assert_array_equal(result[outputs[0]], expected[0])
    np.testing.assert_array_equal(result[outputs[1]], expected[1])


def test_single_dict_input(tmp_path: pathlib.Path) -> None:
    config = addsub_config(("a", "b"), ("OUTPUT__0",))
    prepared = prepare_model(write_model(tmp_path, "m", config, {"model.pt": DictInput()}))
    (result,) = run(prepared, {"a": A, "b": B})
    np.testing.assert_array_equal(result["OUTPUT__0"], A * 10 + B)


def test_input_count_mismatch_upstream_message(tmp_path: pathlib.Path) -> None:
    folder = write_model(tmp_path, "m", addsub_config(("INPUT__0",)), {"model.pt": AddSub()})
    with pytest.raises(PyTritonTorchModelError) as info:
        prepare_model(folder)
    assert info.value.message == "unable to load model 'm', configuration expects 1 inputs, model provides 2"


@pytest.mark.parametrize("dtype", ["TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64"])
def test_rejected_dtypes_upstream_message(tmp_path: pathlib.Path, dtype: str) -> None:
    config = addsub_config(dtype=dtype)
    with pytest.raises(PyTritonTorchModelError) as info:
        prepare_model(write_model(tmp_path, "m", config, {"model.pt": AddSub()}))
    assert info.value.message == f"unsupported datatype {dtype} for input 'INPUT0' for model 'm'"
    output_only = config.replace(f'name: "INPUT0" data_type: {dtype}', 'name: "INPUT0" data_type: TYPE_FP32')
    output_only = output_only.replace(
        f'name: "INPUT1" data_type: {dtype}', 'name: "INPUT1" data_type: TYPE_FP32'
    )
    with pytest.raises(PyTritonTorchModelError) as info:
        prepare_model(write_model(tmp_path, "m2", output_only, {"model.pt": AddSub()}))
    assert info.value.message == f"unsupported datatype {dtype} for output 'OUTPUT__0' for model 'm2'"


def test_output_errors_upstream_messages(tmp_path: pathlib.Path) -> None:
    prepared = prepare_model(
        write_model(
            tmp_path, "idx", addsub_config(outputs=("OUTPUT__0", "OUTPUT__2")), {"model.pt": AddSub()}
        )
    )
    with pytest.raises(PyTritonTorchError) as info:
        run(prepared, {"INPUT0": A, "INPUT1": B})
    assert info.value.message == (
        "The output OUTPUT__2 in the model configuration refers to an output index which doesn't exist. "
        "This model has 2 outputs"
    )
    config = addsub_config()
    config = config.replace(
        'name: "OUTPUT__1" data_type: TYPE_FP32', 'name: "OUTPUT__1" data_type: TYPE_INT64'
    )
    prepared = prepare_model(write_model(tmp_path, "dtype", config, {"model.pt": AddSub()}))
    with pytest.raises(PyTritonTorchError) as info:
        run(prepared, {"INPUT0": A, "INPUT1": B})
    assert (
        info.value.message
        == "configuration expects datatype TYPE_INT64 for output 'OUTPUT__1', model provides TYPE_FP32"
    )
    config = addsub_config(("x",), ("OUTPUT__0",), max_batch_size=0)
    prepared = prepare_model(write_model(tmp_path, "scalar", config, {"model.pt": ScalarOut()}))
    with pytest.raises(PyTritonTorchError) as info:
        run(prepared, {"x": A[0]})
    assert info.value.message == "output 'OUTPUT__0' is a scalar which is not supported."


def test_string_inputs_and_outputs_are_lists_of_str(tmp_path: pathlib.Path) -> None:
    config = addsub_config(("INPUT0",), ("OUTPUT__0",), dtype="TYPE_STRING").replace(
        "dims: [ 4 ]", "dims: [ 1 ]"
    )
    prepared = prepare_model(write_model(tmp_path, "m", config, {"model.pt": Strings()}))
    first = np.array([[b"ab"], [b"cd"]], dtype=object)
    second = np.array(
        [["x\u00e9".encode()]], dtype=object
    )  # UTF-8 survives (TorchScript upper() is ASCII-only)
    results = run(prepared, {"INPUT0": first}, {"INPUT0": second})
    assert results[0]["OUTPUT__0"].tolist() == [[b"AB"], [b"CD"]]
    assert results[1]["OUTPUT__0"].tolist() == [["X\u00e9".encode()]]


# -- batching ------------------------------------------------------------------------------------


def test_batch_gather_and_scatter(tmp_path: pathlib.Path) -> None:
    prepared = prepare_model(write_model(tmp_path, "m", addsub_config(), {"model.pt": AddSub()}))
    sizes = [1, 3, 2]
    requests = [
        {"INPUT0": np.full((n, 4), i, np.float32), "INPUT1": np.full((n, 4), 10 * i, np.float32)}
        for i, n in enumerate(sizes, start=1)
    ]
    results = run(prepared, *requests)
    for i, (n, result) in enumerate(zip(sizes, results, strict=True), start=1):
        np.testing.assert_array_equal(result["OUTPUT__0"], np.full((n, 4), 11 * i, np.float32))
        np.testing.assert_array_equal(result["OUTPUT__1"], np.full((n, 4), -9 * i, np.float32))


# -- parameters (L0_libtorch_optimized_execution, _inference_mode, _disable_cudnn, ...) ------------


def test_parse_bool_upstream_rules() -> None:
    for value in ("true", "TRUE", "On", "1"):
        assert parse_bool(value) is True
    for value in ("false", "False", "OFF", "0"):
        assert parse_bool(value) is False
    with pytest.raises(PyTritonTorchModelError, match=r"^failed to convert 'yes' to boolean$"):
        parse_bool("yes")


def test_bad_boolean_parameter_fails_the_load(tmp_path: pathlib.Path) -> None:
    config = addsub_config(parameters={"DISABLE_OPTIMIZED_EXECUTION": "maybe"})
    with pytest.raises(PyTritonTorchModelError) as info:
        prepare_model(write_model(tmp_path, "m", config, {"model.pt": AddSub()}))
    assert (
        info.value.message
        == "model 'm': parameter DISABLE_OPTIMIZED_EXECUTION: failed to convert 'maybe' to boolean"
    )


def settings_during_execution(
    tmp_path: pathlib.Path, name: str, parameters: dict[str, str]
) -> tuple[dict[str, Any], PreparedModel]:
    prepared = prepare_model(
        write_model(tmp_path, name, addsub_config(parameters=parameters), {"model.pt": AddSub()})
    )
    runner = prepared.runners[1][0]
    runner.record_settings = True
    run(prepared, {"INPUT0": A, "INPUT1": B})
    assert runner.last_snapshot is not None
    return runner.last_snapshot, prepared


@pytest.mark.parametrize(
    ("key", "value", "setting", "in_force", "log"),
    [
        ("DISABLE_OPTIMIZED_EXECUTION", "true", "optimized_execution", False, "optimized execution disabled"),
        ("DISABLE_OPTIMIZED_EXECUTION", "false", "optimized_execution", True, "optimized execution enabled"),
        ("INFERENCE_MODE", "false", "inference_mode", False, "inference mode disabled"),
        ("INFERENCE_MODE", "true", "inference_mode", True, "inference mode enabled"),
        ("DISABLE_CUDNN", "true", "cudnn", False, "cuDNN disabled"),
        ("ENABLE_JIT_PROFILING", "false", "jit_profiling", False, "JIT profiling disabled"),
        ("ENABLE_JIT_EXECUTOR", "false", "jit_executor", False, "JIT executor disabled"),
        ("ENABLE_TENSOR_FUSER", "false", "tensor_fuser", False, "tensor fuser disabled"),
    ],
)
def test_parameter_is_in_force_during_execution_only(
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
    key: str,
    value: str,
    setting: str,
    in_force: bool,
    log: str,
) -> None:
    before = _params.TorchSettings(model="-").snapshot()
    with caplog.at_level(logging.INFO, logger="pytriton_torch.repository"):
        during, _ = settings_during_execution(tmp_path, "m", {key: value})
    assert during[setting] is in_force
    assert during["grad_enabled"] is False  # no_grad always, as upstream
    assert _params.TorchSettings(model="-").snapshot() == before  # restored after the execution
    lines = [r.getMessage() for r in caplog.records if "instance 0" in r.getMessage()]
    assert lines and log in lines[0], lines


def test_nvfuser_is_accepted_with_a_warning(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pytriton_torch.repository"):
        settings_during_execution(tmp_path, "m", {"ENABLE_NVFUSER": "true"})
    assert "ENABLE_NVFUSER is accepted but has no effect: PyTorch no longer has nvFuser" in caplog.text


def test_cache_cleaning_and_thread_counts(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    threads = torch.get_num_threads()
    _params._threads_set_by.clear()
    try:
        with caplog.at_level(logging.INFO, logger="pytriton_torch.repository"):
            during, prepared = settings_during_execution(
                tmp_path,
                "first",
                {"ENABLE_CACHE_CLEANING": "1", "INTRA_OP_THREAD_COUNT": "1", "INTER_OP_THREAD_COUNT": "1"},
            )
            assert prepared.settings.cache_cleaning is True
            assert during["intra_op_threads"] == 1
            # as upstream, the first model that sets a thread count wins
            settings_during_execution(tmp_path, "second", {"INTRA_OP_THREAD_COUNT": "2"})
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
        _params._threads_set_by.clear()
    assert "cache cleaning enabled, intra-op threads 1, inter-op threads 1" in caplog.text
    assert "model 'second': intra-op thread count already set by model 'first'; keeping 1" in caplog.text


def test_bad_thread_count(tmp_path: pathlib.Path) -> None:
    config = addsub_config(parameters={"INTRA_OP_THREAD_COUNT": "many"})
    with pytest.raises(
        PyTritonTorchModelError,
        match="parameter INTRA_OP_THREAD_COUNT: failed to convert 'many' to an integer",
    ):
        prepare_model(write_model(tmp_path, "m", config, {"model.pt": AddSub()}))


# -- instances and weight sharing (L0_libtorch_shared_weights) -----------------------------------


def test_instances_share_weights_by_default(tmp_path: pathlib.Path) -> None:
    config = addsub_config(extra="instance_group [ { count: 4 kind: KIND_CPU } ]")
    runners = prepare_model(write_model(tmp_path, "m", config, {"model.pt": AddSub()})).runners[1]
    assert len(runners) == 4
    assert len({id(r.module) for r in runners}) == 1


def test_weight_sharing_off_loads_one_copy_per_instance(tmp_path: pathlib.Path) -> None:
    config = addsub_config(
        extra="instance_group [ { count: 3 kind: KIND_CPU } ]", parameters={"ENABLE_WEIGHT_SHARING": "false"}
    )
    runners = prepare_model(write_model(tmp_path, "m", config, {"model.pt": AddSub()})).runners[1]
    assert len({id(r.module) for r in runners}) == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_kind_gpu_without_cuda_fails_clearly(tmp_path: pathlib.Path) -> None:
    config = addsub_config(extra="instance_group [ { count: 1 kind: KIND_GPU } ]")
    with pytest.raises(
        PyTritonTorchModelError,
        match="asks for KIND_GPU but CUDA is not available on this machine; use KIND_AUTO",
    ):
        prepare_model(write_model(tmp_path, "m", config, {"model.pt": AddSub()}))
    auto = addsub_config(extra="instance_group [ { count: 2 kind: KIND_AUTO } ]")
    runners = prepare_model(write_model(tmp_path, "auto", auto, {"model.pt": AddSub()})).runners[1]
    assert [r.device.type for r in runners] == ["cpu", "cpu"]


# -- Python runtime: model.py (seed 000) ---------------------------------------------------------

PYTHON_CONFIG = (
    'backend: "python"\nplatform: "pytorch"\nmax_batch_size: 4\n'
    f"input [ {tensors('x', 'TYPE_FP32', [3])} ]\n"
    f"output [ {tensors('y', 'TYPE_FP32', [2])}, {tensors('double', 'TYPE_FP32', [3])} ]\n"
)


def net_state(tmp_path: pathlib.Path) -> tuple[Any, dict[str, torch.Tensor]]:
    namespace: dict[str, Any] = {}
    exec(compile(MODEL_PY, str(tmp_path / "net.py"), "exec"), namespace)
    torch.manual_seed(7)
    net = namespace["Net"]()
    return net, net.state_dict()


def test_model_py_with_state_dict(tmp_path: pathlib.Path) -> None:
    net, state = net_state(tmp_path)
    prepared = prepare_model(
        write_model(tmp_path, "m", PYTHON_CONFIG, {"model.py": MODEL_PY, "model.py.pt": state})
    )
    x = np.random.default_rng(0).random((2, 3), dtype=np.float32)
    (result,) = run(prepared, {"x": x})
    with torch.no_grad():
        expected = net(torch.from_numpy(x))
    np.testing.assert_allclose(result["y"], expected["y"].numpy(), rtol=1e-6)
    np.testing.assert_array_equal(result["double"], x * 2)  # dict outputs are read by key
    assert type(prepared.runners[1][0].module).__name__ == "Net"  # not the imported Linear, not Block


def test_runtime_model_py_reads_model_pt_weights(tmp_path: pathlib.Path) -> None:
    net, state = net_state(tmp_path)
    config = PYTHON_CONFIG.replace(
        'backend: "python"\nplatform: "pytorch"', 'backend: "pytorch"\nruntime: "model.py"'
    )
    prepared = prepare_model(write_model(tmp_path, "m", config, {"model.py": MODEL_PY, "model.pt": state}))
    x = np.ones((1, 3), np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(
            run(prepared, {"x": x})[0]["y"], net(torch.from_numpy(x))["y"].numpy(), rtol=1e-6
        )


def test_model_py_is_chosen_over_model_pt_and_model_pt_alone_is_torchscript(tmp_path: pathlib.Path) -> None:
    config = addsub_config().replace('platform: "pytorch_libtorch"', 'backend: "python"\nplatform: "pytorch"')
    other = textwrap.dedent(
        """
        import torch
        class Mul(torch.nn.Module):
            def forward(self, INPUT0, INPUT1):
                return INPUT0 * INPUT1, INPUT0 * 0
        """
    )
    both = prepare_model(write_model(tmp_path, "both", config, {"model.py": other, "model.pt": AddSub()}))
    np.testing.assert_array_equal(run(both, {"INPUT0": A, "INPUT1": B})[0]["OUTPUT__0"], A * B)
    only_pt = prepare_model(write_model(tmp_path, "only_pt", config, {"model.pt": AddSub()}))
    np.testing.assert_array_equal(run(only_pt, {"INPUT0": A, "INPUT1": B})[0]["OUTPUT__0"], A + B)
    chosen = config + 'default_model_filename: "model.pt"\n'
    named = prepare_model(write_model(tmp_path, "named", chosen, {"model.py": other, "model.pt": AddSub()}))
    np.testing.assert_array_equal(run(named, {"INPUT0": A, "INPUT1": B})[0]["OUTPUT__0"], A + B)


def test_model_py_class_selection_errors(tmp_path: pathlib.Path) -> None:
    imported_only = "from torch.nn import Linear\n"
    with pytest.raises(
        PyTritonTorchModelError, match=re.escape("model.py defines no torch.nn.Module subclass")
    ):
        prepare_model(write_model(tmp_path, "none", PYTHON_CONFIG, {"model.py": imported_only}))
    derived = (
        "import torch\nclass Base(torch.nn.Module):\n    def forward(self, x):\n        return {'y': x[:, :2]}\n"
        "class Net(Base):\n    pass\n"
    )
    prepared = prepare_model(
        write_model(
            tmp_path,
            "derived",
            PYTHON_CONFIG.replace(f", {tensors('double', 'TYPE_FP32', [3])}", ""),
            {"model.py": derived},
        )
    )
    assert type(prepared.runners[1][0].module).__name__ == "Net"  # the subclass, not its base
    two = "import torch\nclass A(torch.nn.Module):\n    pass\nclass B(torch.nn.Module):\n    pass\n"
    with pytest.raises(PyTritonTorchModelError, match=r"defines several torch.nn.Module classes \(A, B\)"):
        prepare_model(write_model(tmp_path, "two", PYTHON_CONFIG, {"model.py": two}))
    helper = "import torch\nfrom helper_layers import Double\nclass Net(torch.nn.Module):\n    def forward(self, x):\n        return Double()(x)\n"
    layers = "import torch\nclass Double(torch.nn.Module):\n    def forward(self, x):\n        return x * 2\n"
    config = PYTHON_CONFIG.replace(f", {tensors('double', 'TYPE_FP32', [3])}", "")
    prepared = prepare_model(
        write_model(tmp_path, "helper", config, {"model.py": helper, "helper_layers.py": layers})
    )
    np.testing.assert_array_equal(
        run(prepared, {"x": A[:, :3]})[0]["y"], A[:, :3] * 2
    )  # sibling module imported
    failing = "raise ValueError('boom')\n"
    with pytest.raises(
        PyTritonTorchModelError, match=re.escape("importing model.py failed: ValueError: boom")
    ):
        prepare_model(write_model(tmp_path, "fails", PYTHON_CONFIG, {"model.py": failing}))


def test_weights_only_by_default_pickle_only_when_allowed(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    net = PickledNet()
    folder = write_model(tmp_path, "m", PYTHON_CONFIG, {"model.py": MODEL_PY})
    torch.save({"model": net}, folder / "1" / "model.py.pt")
    with pytest.raises(
        PyTritonTorchModelError,
        match=r"cannot be loaded with torch.load\(weights_only=True\).*allow_pickle=True",
    ):
        prepare_model(folder)
    torch.save(net, folder / "1" / "model.py.pt")  # a whole pickled module
    with caplog.at_level(logging.WARNING, logger="pytriton_torch.repository"):
        prepared = prepare_model(folder, allow_pickle=True)
    assert "full unpickling (allow_pickle=True)" in caplog.text
    module = prepared.runners[1][0].module
    assert isinstance(module, PickledNet) and module is not net  # the pickled module, from the file


class PickledNet(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"y": x[:, :2], "double": x * 2}


def test_torch_compile_parameter(tmp_path: pathlib.Path) -> None:
    config = (
        PYTHON_CONFIG
        + 'parameters { key: "TORCH_COMPILE_OPTIONAL_PARAMETERS" value: { string_value: "{\\"backend\\": \\"eager\\"}" } }\n'
    )
    _, state = net_state(tmp_path)
    prepared = prepare_model(write_model(tmp_path, "m", config, {"model.py": MODEL_PY, "model.py.pt": state}))
    assert prepared.settings.compile_options == {"backend": "eager"}
    assert run(prepared, {"x": np.ones((1, 3), np.float32)})[0]["y"].shape == (1, 2)
    bad = (
        PYTHON_CONFIG
        + 'parameters { key: "TORCH_COMPILE_OPTIONAL_PARAMETERS" value: { string_value: "{oops" } }\n'
    )
    with pytest.raises(PyTritonTorchModelError, match="TORCH_COMPILE_OPTIONAL_PARAMETERS is not valid JSON"):
        prepare_model(write_model(tmp_path, "bad", bad, {"model.py": MODEL_PY}))


# -- beyond upstream: method, list outputs, exported programs ------------------------------------


def test_method_parameter_serves_another_method(tmp_path: pathlib.Path) -> None:
    config = addsub_config(("x",), ("OUTPUT__0",), parameters={"METHOD": "encode"})
    prepared = prepare_model(write_model(tmp_path, "m", config, {"model.pt": Methods()}))
    np.testing.assert_array_equal(run(prepared, {"x": A})[0]["OUTPUT__0"], A * 100)
    missing = addsub_config(("x",), ("OUTPUT__0",), parameters={"METHOD": "decode"})
    with pytest.raises(PyTritonTorchModelError, match="has no method 'decode' to serve"):
        prepare_model(write_model(tmp_path, "missing", missing, {"model.pt": Methods()}))


def test_exported_program(tmp_path: pathlib.Path) -> None:
    folder = write_model(tmp_path, "m", addsub_config().replace("pytorch_libtorch", "torch_aoti"))
    batch = torch.export.Dim("batch", min=1, max=8)
    program = torch.export.export(
        AddSub(), (torch.ones(2, 4), torch.ones(2, 4)), dynamic_shapes=({0: batch}, {0: batch})
    )
    torch.export.save(program, str(folder / "1" / "model.pt2"))
    prepared = prepare_model(folder)
    assert prepared.runners[1][0].plan.convention == "FORWARD_ARGUMENT"
    results = run(prepared, {"INPUT0": A, "INPUT1": B}, {"INPUT0": A[:1], "INPUT1": B[:1]})
    np.testing.assert_array_equal(results[0]["OUTPUT__1"], A - B)
    np.testing.assert_array_equal(results[1]["OUTPUT__0"], A[:1] + B[:1])


OPTIONAL_PY = textwrap.dedent(
    """
    import torch


    class WithBias(torch.nn.Module):
        def forward(self, x, bias=None):
            return x if bias is None else x + bias
    """
)


def test_optional_input_given_by_some_requests_only(tmp_path: pathlib.Path) -> None:
    config = (
        'backend: "python"\nplatform: "pytorch"\nmax_batch_size: 8\n'
        f"input [ {tensors('x', 'TYPE_FP32', [4])}, {tensors('bias', 'TYPE_FP32', [4], optional='true')} ]\n"
        f"output [ {tensors('OUTPUT__0', 'TYPE_FP32', [4])} ]\n"
    )
    prepared = prepare_model(write_model(tmp_path, "m", config, {"model.py": OPTIONAL_PY}))
    assert prepared.runners[1][0].plan.convention == "FORWARD_ARGUMENT"
    with_bias, without = run(prepared, {"x": A, "bias": B}, {"x": A[:1]})
    np.testing.assert_array_equal(with_bias["OUTPUT__0"], A + B)
    np.testing.assert_array_equal(without["OUTPUT__0"], A[:1])
    too_few = config.replace(f"{tensors('x', 'TYPE_FP32', [4])}, ", "")
    with pytest.raises(PyTritonTorchModelError) as info:
        prepare_model(write_model(tmp_path, "few", too_few, {"model.py": OPTIONAL_PY}))
    assert info.value.message == (
        "model 'few': the served method needs argument(s) x but the configuration has no input of that name"
    )
    none = config.replace("input [", "input [ ] #")
    with pytest.raises(PyTritonTorchModelError) as info:
        prepare_model(write_model(tmp_path, "none", none, {"model.py": OPTIONAL_PY}))
    assert (
        info.value.message
        == "unable to load model 'none', configuration expects 0 inputs, model provides 1 to 2"
    )


def test_list_outputs_by_index_and_missing_dict_key(tmp_path: pathlib.Path) -> None:
    listing = "import torch\nclass L(torch.nn.Module):\n    def forward(self, x):\n        return [x + 1, x + 2, x + 3]\n"
    config = (
        'backend: "pytorch"\nruntime: "model.py"\nmax_batch_size: 8\n'
        f"input [ {tensors('x', 'TYPE_FP32', [4])} ]\n"
        f"output [ {tensors('out__2', 'TYPE_FP32', [4])}, {tensors('out__0', 'TYPE_FP32', [4])} ]\n"
    )
    (result,) = run(prepare_model(write_model(tmp_path, "m", config, {"model.py": listing})), {"x": A})
    np.testing.assert_array_equal(result["out__2"], A + 3)
    np.testing.assert_array_equal(result["out__0"], A + 1)
    keyed = "import torch\nclass D(torch.nn.Module):\n    def forward(self, x):\n        return {'a': x}\n"
    prepared = prepare_model(write_model(tmp_path, "d", config, {"model.py": keyed}))
    with pytest.raises(
        PyTritonTorchError, match=r"output 'out__2' is not a key of the dict the model returned \(keys: a\)"
    ):
        run(prepared, {"x": A})


def test_bf16_tensors(tmp_path: pathlib.Path) -> None:
    from pytriton_torch._dtypes import BF16_DTYPE

    halves = "import torch\nclass H(torch.nn.Module):\n    def forward(self, x):\n        return x * 2\n"
    config = (
        'backend: "pytorch"\nruntime: "model.py"\nmax_batch_size: 8\n'
        f"input [ {tensors('x', 'TYPE_BF16', [4])} ]\noutput [ {tensors('y', 'TYPE_BF16', [4])} ]\n"
    )
    prepared = prepare_model(write_model(tmp_path, "m", config, {"model.py": halves}))
    (result,) = run(prepared, {"x": A.astype(BF16_DTYPE)})
    assert result["y"].dtype == BF16_DTYPE
    np.testing.assert_array_equal(result["y"].astype(np.float32), A * 2)


def test_decoupled_and_model_spec_of_the_bound_model(tmp_path: pathlib.Path) -> None:
    from pytriton_torch._repository._bound import RepositoryModel

    config = addsub_config(extra="model_transaction_policy { decoupled: true }")
    prepared = prepare_model(write_model(tmp_path, "m", config, {"model.pt": AddSub()}))
    model = RepositoryModel(
        prepared.parsed.config,
        prepared.inputs,
        prepared.outputs,
        dict(prepared.runners),
        source=tmp_path / "m",
    )
    assert model.info.decoupled is True and model.info.max_batch_size == 8
    assert [t.name for t in model.info.outputs] == ["OUTPUT__0", "OUTPUT__1"]
    assert [index for index, _ in model.instance_slots()] == [10000]


@pytest.mark.skipif(
    not os.environ.get("PYTRITON_TORCH_SLOW_TESTS"),
    reason="AOTInductor compiles C++ (~45 s on 2 cores); set PYTRITON_TORCH_SLOW_TESTS=1",
)
def test_aoti_package(tmp_path: pathlib.Path) -> None:
    folder = write_model(
        tmp_path, "m", addsub_config(("INPUT__0", "INPUT__1")).replace("pytorch_libtorch", "torch_aoti")
    )
    batch = torch.export.Dim("batch", min=1, max=8)
    program = torch.export.export(
        AddSub(), (torch.ones(2, 4), torch.ones(2, 4)), dynamic_shapes=({0: batch}, {0: batch})
    )
    torch._inductor.aoti_compile_and_package(program, package_path=str(folder / "1" / "model.pt2"))
    prepared = prepare_model(folder)
    assert prepared.runners[1][0].plan.convention == "NAMED_INDEX"
    results = run(prepared, {"INPUT__0": A, "INPUT__1": B}, {"INPUT__0": A[:1], "INPUT__1": B[:1]})
    np.testing.assert_array_equal(results[0]["OUTPUT__1"], A - B)
    np.testing.assert_array_equal(results[1]["OUTPUT__0"], A[:1] + B[:1])


def test_written_config_keeps_the_users_fields(tmp_path: pathlib.Path) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    from pytriton_torch._repository._bound import RepositoryModel
    from pytriton_torch._server._workspace import Workspace

    extra = """
    version_policy: { all: { } }
    instance_group [ { count: 3 kind: KIND_CPU } ]
    dynamic_batching {
      preferred_batch_size: [ 2, 4 ] max_queue_delay_microseconds: 300 priority_levels: 3 default_priority_level: 2
      priority_queue_policy { key: 1 value: { max_queue_size: 5 timeout_action: DELAY } }
    }
    response_cache { enable: true }
    model_warmup [ { name: "w" batch_size: 1 count: 2
      inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 4 ] input_data_file: "ones" } }
      inputs { key: "INPUT1" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } } ]
    """
    config = addsub_config(parameters={"DISABLE_OPTIMIZED_EXECUTION": "true"}, extra=extra)
    config = config.replace(
        'name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ]',
        'name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] optional: true reshape: { shape: [ 2, 2 ] }',
    )
    folder = write_model(
        tmp_path / "repo",
        "m",
        config + 'default_model_filename: "net.pt"\n',
        {"net.pt": AddSub()},
        versions=(1, 2),
    )
    (folder / "warmup").mkdir()
    (folder / "warmup" / "ones").write_bytes(np.ones(4, np.float32).tobytes())
    prepared = prepare_model(folder)
    model = RepositoryModel(
        prepared.parsed.config, prepared.inputs, prepared.outputs, prepared.runners, source=folder
    )
    workspace = Workspace(tmp_path / "workspace")
    model.write(workspace, "ptt-test", os.getpid(), 5.0, "unix", 0.0)

    out = workspace.models / "m"
    written = text_format.Parse((out / "config.pbtxt").read_text(), pb.ModelConfig())
    assert (written.backend, written.platform, written.default_model_filename) == ("python", "", "")
    assert written.version_policy.WhichOneof("policy_choice") == "all"
    assert [(g.kind, g.count) for g in written.instance_group] == [(pb.ModelInstanceGroup.KIND_CPU, 3)]
    batching = written.dynamic_batching
    assert list(batching.preferred_batch_size) == [2, 4] and batching.max_queue_delay_microseconds == 300
    assert (batching.priority_levels, batching.default_priority_level) == (3, 2)
    assert batching.priority_queue_policy[1].max_queue_size == 5
    assert batching.priority_queue_policy[1].timeout_action == pb.ModelQueuePolicy.DELAY
    assert written.response_cache.enable is True
    # model_warmup is not given to Triton: the samples run in this process before the load (a
    # failing warm-up inside Triton can crash tritonserver 2.51), so neither it nor warmup/ is written
    assert len(written.model_warmup) == 0 and not (out / "warmup").exists()
    (sample,) = model.warmups
    assert (sample.name, sample.batch_size, sample.count) == ("w", 1, 2)
    assert sample.inputs["INPUT0"].input_data_file == "ones" and tuple(sample.inputs["INPUT0"].shape) == (4,)
    assert sample.inputs["INPUT1"].zero_data and tuple(sample.inputs["INPUT1"].shape) == (2, 2)  # reshaped
    assert written.input[1].optional is True and list(written.input[1].reshape.shape) == [2, 2]
    assert written.parameters["DISABLE_OPTIMIZED_EXECUTION"].string_value == "true"
    # the proxy's internals stay out of the config (anyone may read it): in a 0600 file beside it
    assert not [key for key in written.parameters if key.startswith("pytriton_torch")]
    settings = out / "pytriton_torch.json"
    assert stat.S_IMODE(settings.stat().st_mode) == 0o600
    assert json.loads(settings.read_text())["owner_pid"] == os.getpid()
    for version in (1, 2):
        shim = (out / str(version) / "model.py").read_text()
        assert f"v_{{{version * 10000} + index}}" in shim
    assert [index for index, _ in model.instance_slots()] == [10000, 10001, 10002, 20000, 20001, 20002]


def test_python_runtime_thread_parameters(tmp_path: pathlib.Path) -> None:
    from tritonclient.grpc import model_config_pb2 as pb

    config = pb.ModelConfig(name="m")
    config.parameters["NUM_THREADS"].string_value = "3"
    config.parameters["NUM_INTEROP_THREADS"].string_value = "2"
    config.parameters["ENABLE_WEIGHT_SHARING"].string_value = "off"
    settings = _params.python_settings(config)
    assert (settings.intra_op_threads, settings.inter_op_threads, settings.weight_sharing) == (3, 2, False)


def test_process_wide_switches_never_leak_into_another_models_execution() -> None:
    import threading

    from tritonclient.grpc import model_config_pb2 as pb

    flipped_config = pb.ModelConfig(name="flipped")
    flipped_config.parameters["DISABLE_CUDNN"].string_value = "true"
    flipped = _params.torchscript_settings(flipped_config)  # marks the gate in use
    plain = _params.torchscript_settings(pb.ModelConfig(name="plain"))
    assert _params.GATE.in_use
    cudnn_before = torch.backends.cudnn.enabled
    inside, release = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def run_flipped() -> None:
        with flipped.applied():
            seen["flipped"] = torch.backends.cudnn.enabled
            inside.set()
            release.wait(30)

    def run_plain() -> None:
        with plain.applied():
            seen["plain"] = torch.backends.cudnn.enabled

    first = threading.Thread(target=run_flipped)
    first.start()
    assert inside.wait(30)
    second = threading.Thread(target=run_plain)
    second.start()
    second.join(0.5)  # gives a gate-less implementation the chance to run under the flipped value
    release.set()
    first.join(30)
    second.join(30)
    assert seen == {"flipped": False, "plain": cudnn_before}
    assert torch.backends.cudnn.enabled is cudnn_before


def test_gate_under_contention_every_execution_sees_its_own_values() -> None:
    import threading

    from tritonclient.grpc import model_config_pb2 as pb

    configs = []
    for name, value in (("on", "false"), ("off", "true")):
        config = pb.ModelConfig(name=name)
        config.parameters["DISABLE_CUDNN"].string_value = value
        configs.append(_params.torchscript_settings(config))
    plain = _params.torchscript_settings(pb.ModelConfig(name="plain"))
    default = torch.backends.cudnn.enabled
    wrong: list[str] = []

    def hammer(settings: _params.TorchSettings, expected: bool) -> None:
        for _ in range(200):
            with settings.applied():
                if torch.backends.cudnn.enabled is not expected:
                    wrong.append(settings.model)

    threads = [
        threading.Thread(target=hammer, args=(configs[0], True)),
        threading.Thread(target=hammer, args=(configs[1], False)),
        threading.Thread(target=hammer, args=(configs[1], False)),
        threading.Thread(target=hammer, args=(plain, default)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert wrong == []
    assert torch.backends.cudnn.enabled is default


def test_load_repository_arguments_without_a_server(tmp_path: pathlib.Path) -> None:
    from pytriton_torch import Triton
    from pytriton_torch.exceptions import PyTritonTorchValidationError

    triton = Triton()
    with pytest.raises(PyTritonTorchValidationError, match="is not a folder"):
        triton.load_repository(tmp_path / "missing")
    write_model(tmp_path, "a", addsub_config(), {"model.pt": AddSub()})
    write_model(tmp_path, "b", addsub_config(), {"model.pt": AddSub()})
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "README.md").write_text("not a model")
    events: list[tuple[str, str, str]] = []
    report = triton.load_repository(
        tmp_path, models=["a", "nope"], on_event=lambda *event: events.append(event)
    )
    assert report.loaded == ["a"]
    assert report.failed == {"nope": f"model 'nope': no folder 'nope' in the model repository {tmp_path}"}
    assert ("a", "ready", "loads when the server starts") in events
    with pytest.raises(PyTritonTorchError, match="already bound"):
        triton._bind_model(triton._models["a"])
    again = triton.load_repository(tmp_path, models=["a"])
    assert again.failed == {"a": "model 'a' is already bound"}


def test_unknown_parameter_keys_are_reported(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = addsub_config(parameters={"DISABLE_OPTIMISED_EXECUTION": "true", "INFERENCE_MODE": "true"})
    events: list[tuple[str, str, str]] = []
    with caplog.at_level(logging.WARNING, logger="pytriton_torch.repository"):
        prepare_model(
            write_model(tmp_path, "m", config, {"model.pt": AddSub()}), emit=lambda *e: events.append(e)
        )
    warning = [detail for _, stage, detail in events if stage == "parse"]
    assert (
        len(warning) == 1
        and "parameter 'DISABLE_OPTIMISED_EXECUTION' is not used by this model's loader" in warning[0]
    )
    assert "DISABLE_OPTIMISED_EXECUTION" in caplog.text


# -- model_warmup: samples and their data files ----------------------------------------------------


def _warmup_config(entries: str, inputs: str = "") -> Any:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    text = inputs or f"input [ {tensors('x', 'TYPE_FP32', [-1, 4])} ]"
    return text_format.Parse(
        f'name: "m"\nmax_batch_size: 2\n{text}\nmodel_warmup [ {entries} ]', pb.ModelConfig()
    )


def test_warmup_samples_keep_triton_semantics() -> None:
    from pytriton_torch._repository._samples import warmup_samples

    inputs = (
        f"input [ {tensors('x', 'TYPE_FP32', [-1, 4], reshape='{ shape: [ -1, 2, 2 ] }')}, "
        f"{tensors('s', 'TYPE_STRING', [1])} ]"
    )
    config = _warmup_config(
        '{ name: "a" batch_size: 2 count: 3 inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 3, 4 ] '
        'random_data: true } } inputs { key: "s" value: { data_type: TYPE_STRING dims: [ 1 ] '
        'input_data_file: "s.bin" } } }',
        inputs,
    )
    (sample,) = warmup_samples(config)
    assert (sample.name, sample.batch_size, sample.count) == ("a", 2, 3)
    x, s = sample.inputs["x"], sample.inputs["s"]
    assert tuple(x.shape) == (3, 2, 2) and x.random_data and not x.zero_data and x.input_data_file is None
    assert x.dtype is np.float32 and s.dtype is np.object_ and s.input_data_file == "s.bin"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 1, 4 ] } }', "sets no input data"),
        ('inputs { key: "x" value: { dims: [ 1, 4 ] zero_data: true } }', "has no data_type"),
    ],
)
def test_malformed_warmup_entries_are_refused(entry: str, message: str) -> None:
    from pytriton_torch._repository._samples import warmup_samples

    with pytest.raises(PyTritonTorchModelError, match=f"model 'm': warm-up sample 'w' input 'x' {message}"):
        warmup_samples(_warmup_config(f'{{ name: "w" batch_size: 1 {entry} }}'))


def test_warmup_dims_must_fit_the_reshape() -> None:
    from pytriton_torch._repository._samples import warmup_samples

    inputs = f"input [ {tensors('x', 'TYPE_FP32', [4], reshape='{ shape: [ 2, 2 ] }')} ]"
    config = _warmup_config(
        '{ name: "w" batch_size: 1 inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 5 ] zero_data: true } } }',
        inputs,
    )
    with pytest.raises(PyTritonTorchModelError, match=r"dims \[5\].*input's dims \[4\] and reshape \[2, 2\]"):
        warmup_samples(config)


def test_warmup_files_are_read_from_the_model_folder_only(tmp_path: pathlib.Path) -> None:
    from pytriton_torch._repository._samples import warmup_file_reader

    folder = tmp_path / "m"
    (folder / "warmup" / "sub").mkdir(parents=True)
    (folder / "warmup" / "data.bin").write_bytes(b"\x01\x02")
    (folder / "warmup" / "sub" / "deep.bin").write_bytes(b"deep")
    (folder / "1").mkdir()
    (folder / "1" / "inside.bin").write_bytes(b"inside")
    (folder / "warmup" / "inside").symlink_to(folder / "1" / "inside.bin")
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"secret")
    (folder / "warmup" / "out").symlink_to(outside)
    read = warmup_file_reader(folder, "m")
    assert read("data.bin") == b"\x01\x02" and read("sub/deep.bin") == b"deep"
    assert read("inside") == b"inside"  # a symlink that stays inside the model folder is fine
    for name in ("../../secret.bin", "sub/../../../secret.bin", str(outside), ""):
        with pytest.raises(PyTritonTorchModelError, match=r"inside the model's warmup/ folder.*refused"):
            read(name)
    with pytest.raises(
        PyTritonTorchModelError, match=r"resolves to .*secret.bin, outside the model folder .*; refused"
    ):
        read("out")
    with pytest.raises(PyTritonTorchModelError, match=r"no file .*warmup/missing.bin"):
        read("missing.bin")
    with pytest.raises(PyTritonTorchModelError, match="no file"):
        read("sub")  # a folder is not a data file


def test_a_warmup_folder_symlinked_out_of_the_model_is_refused(tmp_path: pathlib.Path) -> None:
    from pytriton_torch._repository._samples import warmup_file_reader

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "data.bin").write_bytes(b"data")
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "warmup").symlink_to(elsewhere)
    with pytest.raises(PyTritonTorchModelError, match="outside the model folder"):
        warmup_file_reader(folder, "m")("data.bin")


def test_repository_model_warms_up_every_version_and_instance(tmp_path: pathlib.Path) -> None:
    from pytriton_torch._channel._worker import EventLoopThread
    from pytriton_torch._repository._bound import RepositoryModel

    extra = """
    version_policy: { all: { } }
    instance_group [ { count: 2 kind: KIND_CPU } ]
    model_warmup [ { name: "w" batch_size: 2
      inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 4 ] input_data_file: "a.bin" } }
      inputs { key: "INPUT1" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } } ]
    """
    folder = write_model(tmp_path, "m", addsub_config(extra=extra), {"model.pt": AddSub()}, versions=(1, 2))
    (folder / "warmup").mkdir()
    (folder / "warmup" / "a.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    prepared = prepare_model(folder)
    model = RepositoryModel(
        prepared.parsed.config, prepared.inputs, prepared.outputs, prepared.runners, source=folder
    )
    calls: list[tuple[int, int, list[list[float]]]] = []
    for runner in model.infer_fns:
        inner = runner.fn

        def spy(*args: Any, _runner: Any = runner, _inner: Any = inner, **kwargs: Any) -> Any:
            first = [*args, *kwargs.values()][0]  # INPUT0, however the module is called
            calls.append((_runner.version, _runner.instance, first.tolist()))
            return _inner(*args, **kwargs)

        runner.fn = spy
    loop = EventLoopThread()
    try:
        model.warm_up(loop)
        assert sorted((version, instance) for version, instance, _ in calls) == [
            (1, 0),
            (1, 1),
            (2, 0),
            (2, 1),
        ]
        assert all(seen == [[0.0, 1.0, 2.0, 3.0]] * 2 for _, _, seen in calls)  # batch_size rows of the file
        (folder / "warmup" / "a.bin").write_bytes(b"short")
        with pytest.raises(PyTritonTorchError, match=r"warm-up sample 'w' input 'INPUT0'.*at least 16 bytes"):
            model.warm_up(loop)
    finally:
        loop.stop()
