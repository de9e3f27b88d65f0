"""The native backend's parsing of the worker's answers: valid ones pass, malformed ones are errors, none crash.

A small C driver (tests/unit/native/parser_driver.c) compiles the parser part of
pytriton_torch/_server/_backend.c with AddressSanitizer and UndefinedBehaviorSanitizer where the
compiler has them, and is fed valid answers, targeted malformations and random mutations.
"""

from __future__ import annotations

import pathlib
import random
import shutil
import struct
import subprocess

import msgpack
import pytest

from pytriton_torch._server._preload import BACKEND_SOURCE

DRIVER = pathlib.Path(__file__).parent / "native" / "parser_driver.c"
SANITIZERS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer")


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("native") / "parser_driver"
    base = [
        cc,
        "-O1",
        "-g",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-Wno-unused-function",
        f"-I{BACKEND_SOURCE.parent}",
        "-o",
        str(out),
        str(DRIVER),
    ]
    if subprocess.run([*base[:1], *SANITIZERS, *base[1:]], capture_output=True, check=False).returncode != 0:
        subprocess.run(base, check=True)  # no sanitizer runtime here: still checked for crashes
    return out


def frame(frames: list[bytes]) -> bytes:
    return struct.pack(f"<I{len(frames)}Q", len(frames), *map(len, frames)) + b"".join(frames)


def record(message: bytes, groups: int = 1, seg_size: int = 0) -> bytes:
    return struct.pack("<IQI", groups, seg_size, len(message)) + message


def ok_answer(resps: list[list[list[object]]], frames: list[bytes], seg: str = "") -> bytes:
    header = msgpack.packb({"t": "ok", "id": 7, "resps": resps, "seg": seg, "fn": 12345}, use_bin_type=True)
    return frame([header, *frames])


def run(driver: pathlib.Path, records: list[bytes]) -> list[str]:
    done = subprocess.run(
        [str(driver)], input=b"".join(records), capture_output=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    return done.stdout.decode().splitlines()


def bytes_tensor(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


VALID = [
    record(ok_answer([[["y", "FP32", [1, 2], 0, 0, 8]]], [bytes(8)])),
    record(ok_answer([[["y", "FP32", [2, 1000], -1, 64, 8000]]], [], seg="ptt-x-rsp-1"), seg_size=1 << 20),
    record(ok_answer([[["t", "BYTES", [1, 2], 0, 0, 13]]], [bytes_tensor([b"abc\0\0", b""])])),
    record(
        ok_answer([[["a", "BF16", [3], 0, 0, 6]], [["a", "INT64", [0, 5], 1, 0, 0]]], [bytes(6), b""]),
        groups=2,
    ),
    record(frame([msgpack.packb({"t": "err", "id": 7, "msg": "ValueError: nope"})]), groups=0),
]


def test_valid_answers_pass(driver: pathlib.Path) -> None:
    assert run(driver, VALID) == ["ok 1 1 ok", "ok 1 1 ok", "ok 1 1 ok", "ok 2 2 ok", "ok 0 0 err"]


@pytest.mark.parametrize(
    ("message", "groups", "seg_size", "expected"),
    [
        (ok_answer([[["y", "FP32", [1, 2], 0, 0, 8]]], [bytes(7)]), 1, 0, "its frame holds 7 bytes, not 8"),
        (ok_answer([[["y", "FP32", [1, 2], 3, 0, 8]]], [bytes(8)]), 1, 0, "frame 3 does not exist"),
        (ok_answer([[["y", "FP32", [1, 3], 0, 0, 8]]], [bytes(8)]), 1, 0, "do not match its shape"),
        (ok_answer([[["y", "FP32", [2], -1, 2**40, 8]]], []), 1, 4096, "lie outside the 4096-byte segment"),
        (ok_answer([[["y", "FP32", [2], -1, 4090, 8]]], []), 1, 4096, "lie outside the 4096-byte segment"),
        (ok_answer([[["y", "FP32", [2], -1, 0, 8]]], []), 1, 0, "no segment is mapped"),
        (ok_answer([[["y", "FP32", [2**62, 2**62], 0, 0, 0]]], [b""]), 1, 0, "the shape overflows"),
        (ok_answer([[["y", "FP99", [1], 0, 0, 4]]], [bytes(4)]), 1, 0, "unknown datatype"),
        (ok_answer([[["y", "FP32", [-1], 0, 0, 4]]], [bytes(4)]), 1, 0, "a shape entry is not a size >= 0"),
        (
            ok_answer([[["t", "BYTES", [2], 0, 0, 9]]], [struct.pack("<I", 5) + b"abcde"]),
            1,
            0,
            "malformed BYTES",
        ),
        (
            ok_answer([[["t", "BYTES", [1], 0, 0, 4]]], [struct.pack("<I", 2**32 - 1)]),
            1,
            0,
            "malformed BYTES",
        ),
        (ok_answer([[["y", "FP32", [1], 0, 0]]], [bytes(4)]), 1, 0, "not a list of 6 items"),
        (ok_answer([[["y", "FP32", [1], 0, 0, 4]]], [bytes(4)]), 2, 0, "1 responses for 2 requests"),
        (frame([msgpack.packb([1, 2, 3])]), 1, 0, "the header is not a map"),
        (frame([msgpack.packb({"id": 1})]), 1, 0, "no 't' or 'id'"),
        (frame([b"\x81\xa1t"]), 1, 0, "'t' is not a short string"),
        (struct.pack("<IQ", 1, 2**63) + b"x", 1, 0, "frame 0 runs past the message"),
        (struct.pack("<I", 2**31), 1, 0, "message with 2147483648 frames"),
        (b"\x01", 1, 0, "message shorter than its frame count"),
    ],
)
def test_malformed_answers_are_errors(
    driver: pathlib.Path, message: bytes, groups: int, seg_size: int, expected: str
) -> None:
    (line,) = run(driver, [record(message, groups, seg_size)])
    assert line.startswith("error ") and expected in line, line


def test_random_mutations_never_crash(driver: pathlib.Path) -> None:
    rng = random.Random(12)
    bases = [r[16:] for r in VALID]
    records = []
    for _ in range(20000):
        message = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 6)):
            kind = rng.random()
            at = rng.randrange(len(message)) if message else 0
            if kind < 0.5 and message:
                message[at] = rng.randrange(256)
            elif kind < 0.7:
                del message[at:]
            elif kind < 0.85:
                message[at:at] = rng.randbytes(rng.randint(1, 16))
            elif message:
                for k in range(min(8, len(message) - at)):
                    message[at + k] = 0xFF
        records.append(
            record(bytes(message), groups=rng.randint(0, 2), seg_size=rng.choice([0, 4096, 1 << 20]))
        )
    for _ in range(2000):
        records.append(record(frame([rng.randbytes(rng.randint(0, 64))]), groups=1))
    lines = run(driver, records)
    assert len(lines) == len(records)
    assert any(line.startswith("error") for line in lines)
