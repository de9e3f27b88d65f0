"""``pytriton-torch infer``: one request to a model over HTTP or gRPC, inputs from .npy/.json files or JSON text."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import queue
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._dtypes import triton_to_numpy, wire_datatype
from ..exceptions import PyTritonTorchValidationError
from ._exit import CliError, ExitCode


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """An input as the server's metadata describes it."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where to send the request: ``protocol`` is ``"http"`` or ``"grpc"``, ``address`` is host:port."""

    protocol: str
    address: str


def parse_url(url: str) -> Endpoint:
    """``grpc://host:port`` -> gRPC; ``http://host:port`` or ``host:port`` -> HTTP."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return Endpoint("http", url)
    if scheme not in ("http", "grpc"):
        raise CliError(f"--url {url!r}: scheme must be http:// or grpc://", ExitCode.USAGE)
    return Endpoint(scheme, rest.rstrip("/"))


def read_value(name: str, value: str) -> Any:
    """The array or JSON value given for input ``name``: a .npy file, a .json file or inline JSON."""
    if value.endswith(".npy"):
        path = pathlib.Path(value)
        if not path.is_file():
            raise CliError(f"--input {name}: no such file {value!r}", ExitCode.USAGE)
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise CliError(
                f"--input {name}: {value!r} is not a readable .npy file ({exc})", ExitCode.USAGE
            ) from None
    if value.endswith(".json"):
        path = pathlib.Path(value)
        if not path.is_file():
            raise CliError(f"--input {name}: no such file {value!r}", ExitCode.USAGE)
        text, origin = path.read_text(), repr(value)
    else:
        text, origin = value, "the inline value"
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"--input {name}: {origin} is not JSON ({exc.msg} at position {exc.pos}); "
            "give NAME=FILE.npy, NAME=FILE.json or NAME='[[1, 2, 3]]'",
            ExitCode.USAGE,
        ) from None


def parse_inputs(items: Sequence[str]) -> dict[str, Any]:
    """``["a=x.npy", "b=[1,2]"]`` -> ``{"a": array, "b": [1, 2]}``."""
    values: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"--input {item!r}: expected NAME=FILE.npy|FILE.json|JSON", ExitCode.USAGE)
        if name in values:
            raise CliError(f"--input {name} is given twice", ExitCode.USAGE)
        values[name] = read_value(name, value)
    return values


def to_array(model: str, spec: InputSpec, value: Any, batching: bool) -> np.ndarray:
    """Convert ``value`` to the input's dtype; add the batch axis when the model batches and it is missing."""
    try:
        if spec.datatype == "BYTES":
            array = np.asarray(value, dtype=object)
            array = np.vectorize(_to_bytes, otypes=[object])(array) if array.size else array
        else:
            array = np.asarray(value).astype(triton_to_numpy(spec.datatype), copy=False)
    except (ValueError, TypeError, PyTritonTorchValidationError) as exc:
        raise CliError(
            f"model {model!r} input {spec.name!r}: cannot convert the value to {spec.datatype} ({exc})",
            ExitCode.USAGE,
        ) from None
    if batching and array.ndim == len(spec.shape) - 1:
        array = array[np.newaxis, ...]
    if array.ndim != len(spec.shape):
        raise CliError(
            f"model {model!r} input {spec.name!r}: expected {len(spec.shape)} dimensions "
            f"(shape {list(spec.shape)}{', first is the batch' if batching else ''}), got shape {list(array.shape)}",
            ExitCode.USAGE,
        )
    return array


def _to_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    return (item if isinstance(item, str) else str(item)).encode()


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What ``infer`` needs to know about a model: its inputs, outputs, batching and streaming."""

    inputs: list[InputSpec]
    outputs: list[str]
    batching: bool
    decoupled: bool


@dataclasses.dataclass(frozen=True)
class InferResult:
    """The responses to one request: one for a regular model, any number for a streaming one."""

    responses: list[dict[str, np.ndarray]]
    streamed: bool


class _Client:
    """The few calls ``infer`` needs, over tritonclient's HTTP or gRPC client."""

    def __init__(self, endpoint: Endpoint, timeout_s: float) -> None:
        self.protocol = endpoint.protocol
        self._timeout_s = timeout_s
        if endpoint.protocol == "grpc":
            import tritonclient.grpc as grpcclient

            self._module: Any = grpcclient
            self._client: Any = grpcclient.InferenceServerClient(endpoint.address)
        else:
            import tritonclient.http as httpclient

            self._module = httpclient
            self._client = httpclient.InferenceServerClient(
                endpoint.address, connection_timeout=timeout_s, network_timeout=timeout_s
            )

    def model(self, model: str, version: str) -> ModelSpec:
        if self.protocol == "grpc":
            meta = self._client.get_model_metadata(
                model, version, as_json=True, client_timeout=self._timeout_s
            )
            config = self._client.get_model_config(
                model, version, as_json=True, client_timeout=self._timeout_s
            )
            config = config.get("config", config)
        else:
            meta = self._client.get_model_metadata(model, version)
            config = self._client.get_model_config(model, version)
        inputs = [
            InputSpec(i["name"], i["datatype"], tuple(int(d) for d in i.get("shape", [])))
            for i in meta.get("inputs", [])
        ]
        outputs = [o["name"] for o in meta.get("outputs", [])]
        batching = int(config.get("max_batch_size", 0) or 0) > 0
        decoupled = bool(config.get("model_transaction_policy", {}).get("decoupled", False))
        return ModelSpec(inputs, outputs, batching, decoupled)

    def _request(
        self, arrays: dict[str, tuple[InputSpec, np.ndarray]], outputs: Sequence[str]
    ) -> tuple[list[Any], list[Any]]:
        infer_inputs = []
        for name, (spec, array) in arrays.items():
            item = self._module.InferInput(name, list(array.shape), spec.datatype)
            item.set_data_from_numpy(array)
            infer_inputs.append(item)
        return infer_inputs, [self._module.InferRequestedOutput(name) for name in outputs]

    def infer(
        self,
        model: str,
        version: str,
        arrays: dict[str, tuple[InputSpec, np.ndarray]],
        outputs: Sequence[str],
        request_id: str,
    ) -> dict[str, np.ndarray]:
        inputs, requested = self._request(arrays, outputs)
        kwargs: dict[str, Any] = {"model_version": version, "outputs": requested, "request_id": request_id}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self._timeout_s
        result = self._client.infer(model, inputs, **kwargs)
        return {name: result.as_numpy(name) for name in outputs}

    def stream(
        self,
        model: str,
        version: str,
        arrays: dict[str, tuple[InputSpec, np.ndarray]],
        outputs: Sequence[str],
        request_id: str,
    ) -> list[dict[str, np.ndarray]]:
        """One request to a decoupled model over a gRPC stream; every response until the final one."""
        inputs, requested = self._request(arrays, outputs)
        answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self._client.start_stream(callback=lambda result, error: answers.put((result, error)))
        parts: list[dict[str, np.ndarray]] = []
        try:
            self._client.async_stream_infer(
                model,
                inputs,
                model_version=version,
                outputs=requested,
                request_id=request_id,
                enable_empty_final_response=True,
            )
            deadline = time.monotonic() + self._timeout_s
            while True:
                try:
                    result, error = answers.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise CliError(
                        f"model {model!r}: the stream did not finish within {self._timeout_s:g}s "
                        f"({len(parts)} responses so far)",
                        ExitCode.FAILURE,
                    ) from None
                if error is not None:
                    raise error
                response = result.get_response()
                if response.outputs:
                    parts.append({name: result.as_numpy(name) for name in outputs})
                final = response.parameters.get("triton_final_response")
                if final is not None and final.bool_param:
                    return parts
        finally:
            self._client.stop_stream()

    def close(self) -> None:
        self._client.close()


def infer(
    model: str,
    items: Sequence[str],
    *,
    url: str,
    version: str = "",
    outputs: Sequence[str] = (),
    request_id: str = "",
    timeout_s: float = 60.0,
) -> InferResult:
    """Send one request to ``model``; return its responses' outputs by name (raises CliError on failure).

    A regular model gives one response; a decoupled (streaming) model, queried over gRPC, every
    response it streamed.
    """
    from tritonclient.utils import InferenceServerException

    values = parse_inputs(items)
    client = _Client(parse_url(url), timeout_s)
    try:
        try:
            spec = client.model(model, version)
        except InferenceServerException as exc:
            raise CliError(f"model {model!r} at {url}: {exc.message()}", ExitCode.FAILURE) from None
        except Exception as exc:  # connection refused, DNS, timeouts: tritonclient raises several kinds
            raise CliError(f"cannot reach the server at {url}: {exc}", ExitCode.FAILURE) from None
        by_name = {s.name: s for s in spec.inputs}
        unknown = sorted(set(values) - set(by_name))
        if unknown:
            raise CliError(
                f"model {model!r} has no input {', '.join(map(repr, unknown))}; its inputs are "
                + ", ".join(f"{s.name} ({s.datatype} {list(s.shape)})" for s in spec.inputs),
                ExitCode.USAGE,
            )
        missing = [o for o in outputs if o not in spec.outputs]
        if missing:
            raise CliError(
                f"model {model!r} has no output {', '.join(map(repr, missing))}; its outputs are {', '.join(spec.outputs)}",
                ExitCode.USAGE,
            )
        if spec.decoupled and client.protocol != "grpc":
            raise CliError(
                f"model {model!r} is a streaming (decoupled) model: query it over gRPC, "
                "e.g. --url grpc://localhost:8001",
                ExitCode.USAGE,
            )
        arrays = {
            name: (by_name[name], to_array(model, by_name[name], v, spec.batching))
            for name, v in values.items()
        }
        wanted = list(outputs) or spec.outputs
        try:
            if spec.decoupled:
                return InferResult(client.stream(model, version, arrays, wanted, request_id), streamed=True)
            return InferResult([client.infer(model, version, arrays, wanted, request_id)], streamed=False)
        except InferenceServerException as exc:
            raise CliError(f"model {model!r}: {exc.message()}", ExitCode.FAILURE) from None
    finally:
        client.close()


def to_json(outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Outputs as ``{name: {"datatype", "shape", "data"}}``; BYTES become text (invalid UTF-8 escaped)."""
    doc: dict[str, Any] = {}
    for name, array in outputs.items():
        if array.dtype == object or array.dtype.kind == "S":
            data = np.vectorize(_to_text, otypes=[object])(array).tolist() if array.size else []
        else:
            data = array.tolist()
        doc[name] = {"datatype": wire_datatype(array.dtype), "shape": list(array.shape), "data": data}
    return doc


def _to_text(item: Any) -> str:
    return item.decode("utf-8", errors="backslashreplace") if isinstance(item, bytes) else str(item)
