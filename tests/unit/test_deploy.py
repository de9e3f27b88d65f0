"""Deployment files under deploy/: schema checks (vendored subsets of the Kubernetes/KServe schemas)
and the cross-references that make them work together (probe paths, ports, labels, metric names).

Only PyPI is reachable in CI, so the full Kubernetes OpenAPI schemas cannot be fetched; the subsets
below keep the required fields and types, and forbid unknown keys where a typo would silently
disable something (a misspelt probe is ignored by Kubernetes).
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# Triton series the deployment files rely on; tests/integration/test_cli.py checks that a live
# server exports each of them.
TRITON_SERIES = {
    "nv_inference_queue_duration_us",
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_count",
    "nv_inference_exec_count",
}

_STR = {"type": "string", "minLength": 1}
_INT_OR_NAME = {
    "anyOf": [
        {"type": "integer", "minimum": 1, "maximum": 65535},
        {"type": "string", "pattern": "^[a-z0-9-]{1,15}$"},
    ]
}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_PROBE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["httpGet"],
    "properties": {
        "httpGet": {
            "type": "object",
            "additionalProperties": False,
            "required": ["path", "port"],
            "properties": {"path": _STR, "port": _INT_OR_NAME, "scheme": {"enum": ["HTTP", "HTTPS"]}},
        },
        "initialDelaySeconds": {"type": "integer", "minimum": 0},
        "periodSeconds": {"type": "integer", "minimum": 1},
        "timeoutSeconds": {"type": "integer", "minimum": 1},
        "failureThreshold": {"type": "integer", "minimum": 1},
        "successThreshold": {"type": "integer", "minimum": 1},
    },
}
_QUANTITY = {"anyOf": [{"type": "string", "pattern": r"^[0-9.]+(m|Ki|Mi|Gi|Ti)?$"}, {"type": "number"}]}
_CONTAINER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "image"],
    "properties": {
        "name": _STR,
        "image": _STR,
        "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
        "command": {"type": "array", "items": {"type": "string"}},
        "args": {"type": "array", "items": {"type": "string"}},
        "env": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": _STR, "value": {"type": "string"}},
            },
        },
        "ports": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["containerPort"],
                "properties": {
                    "name": {"type": "string", "pattern": "^[a-z0-9-]{1,15}$"},
                    "containerPort": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
                },
            },
        },
        "startupProbe": _PROBE,
        "readinessProbe": _PROBE,
        "livenessProbe": _PROBE,
        "resources": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "requests": {"type": "object", "additionalProperties": _QUANTITY},
                "limits": {"type": "object", "additionalProperties": _QUANTITY},
            },
        },
        "volumeMounts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "mountPath"],
                "properties": {"name": _STR, "mountPath": _STR, "readOnly": {"type": "boolean"}},
            },
        },
        "securityContext": {"type": "object"},
    },
}
_VOLUMES = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": _STR,
            "emptyDir": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"medium": {"enum": ["", "Memory"]}, "sizeLimit": _QUANTITY},
            },
        },
    },
}
_POD_SPEC = {
    "type": "object",
    "required": ["containers"],
    "properties": {
        "containers": {"type": "array", "minItems": 1, "items": _CONTAINER},
        "volumes": _VOLUMES,
        "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
        "securityContext": {"type": "object"},
    },
}


def _kind(
    api_version: str, kind: str, spec: dict[str, Any] | None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "apiVersion": {"const": api_version},
        "kind": {"const": kind},
        "metadata": _METADATA,
    }
    required = ["apiVersion", "kind", "metadata"]
    if spec is not None:
        properties["spec"] = spec
        required.append("spec")
    properties.update(extra or {})
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": False}


SCHEMAS: dict[str, dict[str, Any]] = {
    "Deployment": _kind(
        "apps/v1",
        "Deployment",
        {
            "type": "object",
            "required": ["selector", "template"],
            "additionalProperties": False,
            "properties": {
                "replicas": {"type": "integer", "minimum": 0},
                "selector": {
                    "type": "object",
                    "required": ["matchLabels"],
                    "properties": {"matchLabels": {"type": "object", "minProperties": 1}},
                },
                "template": {
                    "type": "object",
                    "required": ["metadata", "spec"],
                    "properties": {
                        "metadata": {"type": "object", "required": ["labels"]},
                        "spec": _POD_SPEC,
                    },
                },
            },
        },
    ),
    "Service": _kind(
        "v1",
        "Service",
        {
            "type": "object",
            "required": ["selector", "ports"],
            "additionalProperties": False,
            "properties": {
                "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                "selector": {"type": "object", "minProperties": 1},
                "ports": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "name": _STR,
                            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                            "targetPort": _INT_OR_NAME,
                            "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
                            "appProtocol": _STR,
                        },
                    },
                },
            },
        },
    ),
    "HorizontalPodAutoscaler": _kind(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        {
            "type": "object",
            "required": ["scaleTargetRef", "maxReplicas"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["apiVersion", "kind", "name"],
                    "properties": {"apiVersion": _STR, "kind": _STR, "name": _STR},
                },
                "minReplicas": {"type": "integer", "minimum": 1},
                "maxReplicas": {"type": "integer", "minimum": 1},
                "metrics": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "pods"],
                        "properties": {
                            "type": {"const": "Pods"},
                            "pods": {
                                "type": "object",
                                "required": ["metric", "target"],
                                "properties": {
                                    "metric": {
                                        "type": "object",
                                        "required": ["name"],
                                        "properties": {"name": _STR},
                                    },
                                    "target": {
                                        "type": "object",
                                        "required": ["type", "averageValue"],
                                        "properties": {
                                            "type": {"const": "AverageValue"},
                                            "averageValue": _QUANTITY,
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
                "behavior": {"type": "object"},
            },
        },
    ),
    "ConfigMap": _kind(
        "v1", "ConfigMap", None, {"data": {"type": "object", "additionalProperties": {"type": "string"}}}
    ),
    "InferenceService": _kind(
        "serving.kserve.io/v1beta1",
        "InferenceService",
        {
            "type": "object",
            "required": ["predictor"],
            "additionalProperties": False,
            "properties": {
                "predictor": {
                    "type": "object",
                    "required": ["containers"],
                    "additionalProperties": False,
                    "properties": {
                        "minReplicas": {"type": "integer", "minimum": 0},
                        "maxReplicas": {"type": "integer", "minimum": 1},
                        "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
                        "scaleTarget": {"type": "integer", "minimum": 1},
                        "containers": {"type": "array", "minItems": 1, "maxItems": 1, "items": _CONTAINER},
                        "volumes": _VOLUMES,
                    },
                },
            },
        },
    ),
}


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((str(path.relative_to(DEPLOY)), doc))
    return docs


def _one(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in _documents() if doc.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} under deploy/, found {len(found)}"
    return found[0]


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]["predictor"]
    return dict(spec["containers"][0])


def test_every_yaml_file_matches_its_schema() -> None:
    documents = _documents()
    kinds = {doc.get("kind") for _, doc in documents}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "InferenceService", "ConfigMap"} <= kinds
    for path, doc in documents:
        if doc.get("kind") == "Kustomization":
            continue
        assert doc.get("kind") in SCHEMAS, f"{path}: no schema for kind {doc.get('kind')!r}"
        jsonschema.validate(doc, SCHEMAS[doc["kind"]])


def test_schema_catches_a_misspelt_probe() -> None:
    deployment = _one("Deployment")
    container = _container(deployment)
    container["readinesProbe"] = container.pop("readinessProbe")
    deployment["spec"]["template"]["spec"]["containers"] = [container]
    with pytest.raises(jsonschema.ValidationError, match="readinesProbe"):
        jsonschema.validate(deployment, SCHEMAS["Deployment"])


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    files = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


@pytest.mark.parametrize("kind", ["Deployment", "InferenceService"])
def test_probes_use_triton_health_endpoints_on_the_http_port(kind: str) -> None:
    container = _container(_one(kind))
    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if probe in container:
            port = container[probe]["httpGet"]["port"]
            assert ports.get(port, port) == 8000, f"{kind} {probe} is not on the HTTP port"


@pytest.mark.parametrize("kind", ["Deployment", "InferenceService"])
def test_server_arguments(kind: str) -> None:
    args = _container(_one(kind))["args"]
    assert args[0] == "serve"
    target = ROOT / args[1]
    assert target.is_file(), f"{kind} serves {args[1]}, which does not exist"
    assert "def bind_models(" in target.read_text()
    assert args[args.index("--address") + 1] == "0.0.0.0", "in a pod the server must listen on all interfaces"


@pytest.mark.parametrize("kind", ["Deployment", "InferenceService"])
def test_dev_shm_is_a_memory_volume(kind: str) -> None:
    doc = _one(kind)
    spec = doc["spec"]["template"]["spec"] if kind == "Deployment" else doc["spec"]["predictor"]
    mount = next(m for m in _container(doc)["volumeMounts"] if m["mountPath"] == "/dev/shm")
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["emptyDir"]["medium"] == "Memory"


def test_deployment_ports_and_service() -> None:
    deployment, service = _one("Deployment"), _one("Service")
    ports = {p["name"]: p["containerPort"] for p in _container(deployment)["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items(), (
        "the Service selects no pod of the Deployment"
    )
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports, f"Service port {port['name']} targets an unknown container port"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["metrics"])


def test_kserve_predictor_container() -> None:
    container = _container(_one("InferenceService"))
    assert container["name"] == "kserve-container"  # the name KServe routes to
    assert [p["containerPort"] for p in container["ports"]] == [8000]  # Knative routes one port


def test_hpa_scales_the_deployment_on_an_adapter_metric() -> None:
    hpa, deployment, rules_map = _one("HorizontalPodAutoscaler"), _one("Deployment"), _one("ConfigMap")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    rules = yaml.safe_load(rules_map["data"]["config.yaml"])["rules"]
    exported = {rule["name"]["as"] for rule in rules}
    for metric in hpa["spec"]["metrics"]:
        assert metric["pods"]["metric"]["name"] in exported
    used = set()
    for rule in rules:
        used |= set(re.findall(r"\bnv_[a-z_]+", rule["seriesQuery"] + rule["metricsQuery"]))
    assert used and used <= TRITON_SERIES, used - TRITON_SERIES


def test_dockerfile() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.M)
    assert base and re.search(r"bookworm|trixie|noble|jammy", base.group(1)), "base image needs glibc >= 2.35"
    assert re.search(r"^EXPOSE\s+8000\s+8001\s+8002\s*$", text, re.M)
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "pytriton-torch"]' in text
    for source in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, re.M):
        for item in source.split():
            assert (ROOT / item).exists(), f"COPY {item}: not in the repository"
    cmd = re.search(r"^CMD\s+\[(.*)\]", text, re.M)
    assert cmd
    args = [a.strip().strip('"') for a in cmd.group(1).split(",")]
    assert args[0] == "serve" and (ROOT / args[1]).is_file()
    assert args[args.index("--address") + 1] == "0.0.0.0"
    assert "torch==2.13.0" in text, "pin torch so pip does not pull another build"
