#!/usr/bin/env bash
# The GPU check in one command, for an offline GPU machine with CPython 3.12, numpy and a CUDA torch
# already installed, and this working tree plus .gpu_bundle/ (made here by scripts/gpu_bundle.sh).
#
#   scripts/gpu_check.sh OUT_DIR [--bundle DIR] [--no-gpu]
#
# Steps (each with its own time limit, all within GPU_CHECK_BUDGET_S, 540 s by default):
#   env      nvidia-smi, OS, glibc, compiler, Python and torch versions
#   gpu      torch sees a CUDA device; without one the check stops here (exit 2) unless --no-gpu
#   install  unpack the bundle's site-packages (server files, missing wheels) onto PYTHONPATH, with
#            this tree first; `pytriton-torch build` with the system compiler, else the bundle's builds;
#            the bundle's libpython3.12 on LD_LIBRARY_PATH if this Python has no shared one for the stub
#   imports  versions of everything the tests and the benchmark import, against our minimums
#   doctor   `pytriton-torch check` (libpython for the stub, tritonserver, /dev/shm)
#   probe    scripts/gpu_probe.py: one FP32 + BYTES round trip through a served model; if it fails
#            under numpy 2.x (the Python-backend stub predates NumPy 2), again with the bundle's
#            numpy 1.26.4 first on PYTHONPATH, which the remaining steps then use (GPU_CHECK_NUMPY=
#            auto|system|bundled, auto by default)
#   pytest   pytest -m gpu tests/gpu (junit xml)
#   bench    benchmarks/bench_torch.py --device cuda ($BENCH_ARGS); under numpy 2.x always with the
#            bundle's numpy 1.26.4 (PyTriton 0.7's setups run their model code in the same stub)
#
# Environment: PYTHON (python3), GPU_CHECK_BUDGET_S (540), GPU_CHECK_NUMPY (auto), BENCH_ARGS
# ("--size 224 --duration 8 --rounds 2 --concurrency 32").
#
# OUT_DIR receives at most 8 files (the device tool's limit on what comes back): summary.txt,
# summary.json, env.txt, junit_gpu.xml, pytest_gpu.log, bench_torch.json, bench_torch.log and
# logs.tar.gz (every step's log, the benchmark's server logs, nvidia-smi -q). The summary is written
# whatever happens. Exit status: 0 all steps passed, 2 no GPU, 1 otherwise.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=""
BUNDLE=$REPO/.gpu_bundle
NO_GPU_OK=0
while [ $# -gt 0 ]; do
    case $1 in
        --bundle) BUNDLE=$2; shift 2 ;;
        --no-gpu) NO_GPU_OK=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        -*) echo "gpu_check.sh: unknown option $1" >&2; exit 64 ;;
        *) OUT=$1; shift ;;
    esac
done
[ -n "$OUT" ] || { echo "usage: scripts/gpu_check.sh OUT_DIR [--bundle DIR] [--no-gpu]" >&2; exit 64; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
BUDGET_S=${GPU_CHECK_BUDGET_S:-540}
RESERVE_S=20  # kept back for the summary and the log archive
NUMPY_MODE=${GPU_CHECK_NUMPY:-auto}
BENCH_ARGS=${BENCH_ARGS:---size 224 --duration 8 --rounds 2 --concurrency 32}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
LOGS=$WORK/logs
mkdir -p "$LOGS"
SECONDS=0
STEPS=()      # name|status|seconds|note
HEADLINE=""   # one sentence for the top of the summary
NOTES=()

record() { STEPS+=("$1|$2|$3|$4"); echo "== $1: $2 (${3}s) $4"; }

exit_by_steps() {
    local line
    for line in "${STEPS[@]}"; do
        case $line in *"|FAIL|"* | *"|TIMEOUT|"*) exit 1 ;; esac
    done
    exit 0
}

# run_step NAME LIMIT_S LOG CMD...: run CMD under a time limit, output to LOG (its tail to the console).
run_step() {
    local name=$1 limit=$2 log=$3 rc=0 began=$SECONDS
    shift 3
    local left=$((BUDGET_S - RESERVE_S - SECONDS))
    [ "$limit" -le "$left" ] || limit=$left
    if [ "$limit" -lt 5 ]; then
        record "$name" SKIPPED 0 "no time left in the ${BUDGET_S}s budget"
        return 1
    fi
    echo "== $name (limit ${limit}s): $*"
    # timeout runs programs: a shell function of this script runs in a child bash (exported below).
    if declare -F "$1" >/dev/null; then set -- bash -c '"$@"' _ "$@"; fi
    # No tee: a process that outlived the time limit while holding the pipe would hang the check.
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1 </dev/null || rc=$?
    tail -n 12 "$log"
    local took=$((SECONDS - began)) status=OK
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status=TIMEOUT; elif [ "$rc" -ne 0 ]; then status=FAIL; fi
    record "$name" "$status" "$took" "$([ "$rc" -eq 0 ] || echo "exit $rc; see $(basename "$log")")"
    return "$rc"
}

write_summary() {
    local code=$1 result=PASS line
    for line in "${STEPS[@]}"; do
        case $line in *"|FAIL|"* | *"|TIMEOUT|"*) result=FAIL ;; esac
    done
    [ "$code" -eq 2 ] && result=NO_GPU
    [ "$code" -ne 0 ] && [ "$result" = PASS ] && result=FAIL
    [ -n "$HEADLINE" ] || HEADLINE="result $result"
    {
        echo "pytriton_torch GPU check: $result"
        echo "$HEADLINE"
        echo "host $(hostname), $(date -u +%FT%TZ), ${SECONDS}s of a ${BUDGET_S}s budget"
        echo
        printf '%-9s %-8s %6s  %s\n' step status secs note
        for line in "${STEPS[@]}"; do
            IFS='|' read -r n s t note <<<"$line"
            printf '%-9s %-8s %6s  %s\n' "$n" "$s" "$t" "$note"
        done
        for line in "${NOTES[@]}"; do echo "note: $line"; done
        if [ -f "$OUT/junit_gpu.xml" ]; then
            echo
            "$PY" - "$OUT/junit_gpu.xml" <<'EOF' || true
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
keys = ("tests", "failures", "errors", "skipped")
print("pytest -m gpu tests/gpu: " + ", ".join(f"{k} {sum(int(s.get(k, 0)) for s in suites)}" for k in keys))
for case in root.iter("testcase"):
    for bad in list(case):
        if bad.tag in ("failure", "error"):
            print(f"  {bad.tag.upper()} {case.get('name')}: {(bad.get('message') or '')[:200]}")
EOF
        fi
        if [ -f "$OUT/bench_torch.log" ]; then
            echo
            sed -n '/^ResNet-18-sized/,$p' "$OUT/bench_torch.log"
        fi
    } >"$OUT/summary.txt"
    GPU_CHECK_NOTES=$(printf '%s\n' "${NOTES[@]}") "$PY" - "$OUT" "$result" "$HEADLINE" "$SECONDS" "${STEPS[@]}" <<'EOF' || true
import json, os, pathlib, sys
out, result, headline, seconds, *steps = sys.argv[1:]
report = {
    "result": result,
    "headline": headline,
    "seconds": int(seconds),
    "steps": [dict(zip(("step", "status", "seconds", "note"), s.split("|", 3))) for s in steps],
    "notes": [n for n in os.environ.get("GPU_CHECK_NOTES", "").splitlines() if n],
}
bench = pathlib.Path(out, "bench_torch.json")
if bench.exists():
    figures = json.loads(bench.read_text())
    report["bench"] = {k: figures.get(k) for k in ("served_rps", "direct_rps", "ratios", "batches_formed")}
pathlib.Path(out, "summary.json").write_text(json.dumps(report, indent=2))
EOF
}

finish() {
    local code=$?
    trap - EXIT
    set +e
    write_summary "$code"
    [ -d "$WORK/bench" ] && cp "$WORK"/bench/*.log "$LOGS/" 2>/dev/null
    tar -C "$WORK" -czf "$OUT/logs.tar.gz" logs 2>/dev/null
    rm -rf "$WORK"
    echo
    cat "$OUT/summary.txt"
    exit "$code"
}
trap finish EXIT

# --- env ---------------------------------------------------------------------------------------
{
    echo "## uname"; uname -a
    echo "## os"; grep -E '^(PRETTY_NAME|VERSION_ID)=' /etc/os-release 2>/dev/null || true
    echo "## glibc"; ldd --version 2>&1 | head -1 || true
    echo "## compiler"; for c in "${CC:-}" cc gcc clang; do [ -n "$c" ] && command -v "$c" && break; done || echo none
    echo "## python"; command -v "$PY"; "$PY" -VV 2>&1 || true
    echo "## nvidia-smi"; nvidia-smi 2>&1 || echo "nvidia-smi not available"
    echo "## repo"; git -C "$REPO" log -1 --format='%H %s' 2>/dev/null || echo "(not a git checkout)"
} >"$OUT/env.txt" 2>&1 || true
nvidia-smi -q >"$LOGS/nvidia-smi-q.txt" 2>&1 || true
record env OK "$SECONDS" "env.txt"

# --- gpu ---------------------------------------------------------------------------------------
GPU_PY='import torch
ok = torch.cuda.is_available()
print(f"torch {torch.__version__} cuda {torch.version.cuda} available {ok}"
      + (f" device {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}" if ok else ""))
raise SystemExit(0 if ok else 3)'
HAVE_GPU=0
if gpu_line=$(timeout 120 "$PY" -c "$GPU_PY" 2>"$LOGS/gpu.err"); then
    HAVE_GPU=1
    record gpu OK "$SECONDS" "$gpu_line"
else
    why=${gpu_line:-$(tail -1 "$LOGS/gpu.err")}
    command -v nvidia-smi >/dev/null || why="$why; nvidia-smi not found"
    HEADLINE="no CUDA device visible to $PY ($why): nothing GPU-specific was run"
    if [ "$NO_GPU_OK" -eq 0 ]; then
        record gpu NO_GPU "$SECONDS" "$why"
        exit 2
    fi
    record gpu SKIPPED "$SECONDS" "no GPU ($why); --no-gpu: install, imports, doctor and probe only"
fi
echo "$gpu_line" >>"$OUT/env.txt"

# --- install -----------------------------------------------------------------------------------
install_bundle() {
    [ -f "$BUNDLE/site.tar.xz" ] || { echo "no bundle at $BUNDLE: run scripts/gpu_bundle.sh where pip works"; return 1; }
    local version
    version=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    [ "$version" = 3.12 ] || { echo "the bundle is built for CPython 3.12; $PY is $version"; return 1; }
    (cd "$BUNDLE" && grep -E '^[0-9a-f]{64}  ' MANIFEST.txt | awk '{print $1 "  " $3}' | sha256sum -c --quiet) \
        || { echo "bundle files do not match MANIFEST.txt: rebuild it"; return 1; }
    # A child bash without set -e runs this function: every failure returns explicitly.
    extract "$BUNDLE/site.tar.xz" "$WORK/site" || return 1
    "$PY" -c 'import pytriton_torch' \
        || { echo "cannot import pytriton_torch from $REPO with the bundle's packages (see above)"; return 1; }
    if "$PY" -c 'from pytriton_torch._server._preload import compiler; raise SystemExit(compiler() is None)'; then
        "$PY" -m pytriton_torch.cli build || return 1
    elif [ -f "$BUNDLE/prebuilt.tar.xz" ]; then
        extract "$BUNDLE/prebuilt.tar.xz" "$REPO" || return 1
        echo "no C compiler: using what gpu_bundle.sh built ($(grep -m1 'made by' "$BUNDLE/MANIFEST.txt" | cut -c3-))"
    fi
    "$PY" -c 'from pytriton_torch._server._preload import existing_library as e; raise SystemExit(e() is None)' \
        || { echo "no C compiler and no preload library for these sources in the bundle: rebuild the bundle"; return 1; }
}
extract() {
    mkdir -p "$2"
    "$PY" - "$1" "$2" <<'EOF'
import sys, tarfile
with tarfile.open(sys.argv[1]) as tar:
    try:
        tar.extractall(sys.argv[2], filter="data")
    except TypeError:  # Python without extraction filters
        tar.extractall(sys.argv[2])
EOF
}
export -f install_bundle extract
export BUNDLE PY WORK REPO
export PYTHONPATH="$REPO:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
cd "$REPO"
run_step install 120 "$LOGS/install.log" install_bundle || { HEADLINE="could not install from $BUNDLE: $(tail -1 "$LOGS/install.log")"; exit 1; }

# --- libpython: the stub links libpython3.12.so.1.0; a Python built without one gets the bundle's
LIBPY_PY='import ctypes.util, glob, os, sys, sysconfig
libdir = sysconfig.get_config_var("LIBDIR") or ""
found = glob.glob(os.path.join(libdir, "libpython%d.%d*.so*" % sys.version_info[:2]))
print(found[0] if found else "")
raise SystemExit(0 if found or ctypes.util.find_library("python%d.%d" % sys.version_info[:2]) else 1)'
if ! libpython=$("$PY" -c "$LIBPY_PY"); then
    if [ -f "$BUNDLE/libpython.tar.xz" ]; then
        extract "$BUNDLE/libpython.tar.xz" "$WORK/libpython"
        export LD_LIBRARY_PATH="$WORK/libpython${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        NOTES+=("no shared libpython3.12 for the stub on this machine: using the bundle's ($(grep -m1 'libpython.tar.xz' "$BUNDLE/MANIFEST.txt" | cut -c3-))")
    else
        NOTES+=("no shared libpython3.12 for the stub on this machine and none in the bundle: the stub cannot start")
    fi
fi
echo "## libpython for the stub: ${libpython:-none in LIBDIR}${LD_LIBRARY_PATH:+ (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)}" >>"$OUT/env.txt"

# --- imports -----------------------------------------------------------------------------------
cat >"$WORK/imports.py" <<'EOF'
import importlib
import importlib.metadata as md
import sys

from packaging.version import Version

# Our minimums (pyproject.toml) and tritonclient 2.73's; "0": any version.
NEED = {"numpy": "1.23", "torch": "2.1", "tritonclient": "2.51", "grpcio": "1.81.1", "protobuf": "6.30",
        "geventhttpclient": "2.3.3", "gevent": "0", "python-rapidjson": "0.9.1", "pyzmq": "25",
        "msgpack": "1.0", "wrapt": "1.14", "typer": "0.12", "rich": "13", "ml-dtypes": "0.2",
        "typing-extensions": "4.6", "psutil": "5.9", "pytest": "8", "pytest-timeout": "2.3",
        "nvidia-pytriton": "0.7", "sh": "1.14", "typing-inspect": "0.6", "importlib-metadata": "7",
        "aiohttp": "3.8.1", "packaging": "14.1"}
MODULES = ["numpy", "torch", "tritonclient.http", "tritonclient.grpc", "zmq", "msgpack", "wrapt", "typer",
           "rich", "ml_dtypes", "psutil", "pytest", "pytest_timeout", "pytriton.triton", "pytriton_torch"]
bad = []
for dist, least in NEED.items():
    try:
        have = md.version(dist)
    except md.PackageNotFoundError:
        have = "missing"
    ok = have != "missing" and Version(have) >= Version(least)
    print(f"{dist:20s} {have:24s} {'' if ok else 'NEEDS >= ' + least}")
    bad += [] if ok else [dist]
for name in MODULES:
    try:
        module = importlib.import_module(name)
        print(f"import {name:18s} ok  {getattr(module, '__file__', '')}")
    except Exception as exc:
        print(f"import {name:18s} FAILED {type(exc).__name__}: {exc}")
        bad += [] if name in bad else [name]
sys.exit(f"unusable: {', '.join(bad)}" if bad else 0)
EOF
if ! run_step imports 90 "$LOGS/imports.log" "$PY" "$WORK/imports.py"; then
    NOTES+=("imports: $(tail -1 "$LOGS/imports.log")")
fi
{ echo "## versions (after install)"; cat "$LOGS/imports.log"; } >>"$OUT/env.txt"

# --- doctor ------------------------------------------------------------------------------------
run_step doctor 60 "$LOGS/doctor.log" "$PY" -m pytriton_torch.cli check || NOTES+=("doctor: $(grep -m3 -i fail "$LOGS/doctor.log" | tr '\n' ' ')")
{ echo "## pytriton-torch check"; cat "$LOGS/doctor.log"; } >>"$OUT/env.txt"

# --- probe -------------------------------------------------------------------------------------
NUMPY1_ACTIVE=0
use_bundled_numpy() {
    extract "$BUNDLE/numpy1.tar.xz" "$WORK/numpy1"
    export PYTHONPATH="$WORK/numpy1:$PYTHONPATH"
    NUMPY1_ACTIVE=1
}
system_numpy=$("$PY" -c 'import numpy; print(numpy.__version__)' 2>/dev/null) || system_numpy=0.missing
if [ "$NUMPY_MODE" = bundled ]; then
    use_bundled_numpy
    NOTES+=("GPU_CHECK_NUMPY=bundled: numpy 1.26.4 from the bundle instead of the system's $system_numpy")
fi
if run_step probe 150 "$LOGS/probe.log" "$PY" scripts/gpu_probe.py --torch; then
    NOTES+=("server path works with numpy $("$PY" -c 'import numpy; print(numpy.__version__)')")
elif [ "$NUMPY_MODE" = auto ] && [ "${system_numpy%%.*}" -ge 2 ] && [ -f "$BUNDLE/numpy1.tar.xz" ]; then
    NOTES+=("the server path FAILS with the system numpy $system_numpy: $(tail -1 "$LOGS/probe.log" | cut -c1-400)")
    use_bundled_numpy
    if run_step probe-np1 150 "$LOGS/probe-np1.log" "$PY" scripts/gpu_probe.py --torch; then
        HEADLINE="numpy $system_numpy breaks the Python-backend stub path; the steps after the probe use the bundle's numpy 1.26.4"
        # The failed first probe is the expected finding here, not a failure of the check.
        STEPS=("${STEPS[@]/probe|FAIL|/probe|NUMPY2|}")
    else
        HEADLINE="the server path fails with numpy $system_numpy and with numpy 1.26.4: see probe*.log"
    fi
else
    HEADLINE="the server path fails (numpy $system_numpy): $(tail -1 "$LOGS/probe.log" | cut -c1-300)"
fi
{ echo "## probe"; cat "$LOGS"/probe*.log; } >>"$OUT/env.txt"

if [ "$HAVE_GPU" -eq 0 ]; then
    record pytest SKIPPED 0 "no GPU"
    record bench SKIPPED 0 "no GPU"
    exit_by_steps
fi

# --- pytest ------------------------------------------------------------------------------------
# Only pytest-timeout among the image's plugins: others (jaxtyping, xdist, cov...) may import what the
# bundled numpy 1.26 cannot serve (jax needs numpy 2).
run_step pytest 240 "$OUT/pytest_gpu.log" env PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 "$PY" -m pytest -p pytest_timeout \
    -p no:cacheprovider -m gpu tests/gpu -q -rA -o timeout=120 --junitxml="$OUT/junit_gpu.xml" || true

# --- bench -------------------------------------------------------------------------------------
mkdir -p "$WORK/bench"
bench_env=()
if [ "$NUMPY1_ACTIVE" -eq 0 ] && [ "${system_numpy%%.*}" -ge 2 ] && [ -f "$BUNDLE/numpy1.tar.xz" ]; then
    # PyTriton 0.7's setups run its own model code in the same stub: numpy 1.26 for every setup alike.
    extract "$BUNDLE/numpy1.tar.xz" "$WORK/numpy1"
    bench_env=(env "PYTHONPATH=$WORK/numpy1:$PYTHONPATH")
    NOTES+=("bench: ran with the bundle's numpy 1.26.4 (PyTriton 0.7's stub needs numpy < 2)")
fi
# shellcheck disable=SC2086  # BENCH_ARGS is a list of options
run_step bench 300 "$OUT/bench_torch.log" "${bench_env[@]}" "$PY" benchmarks/bench_torch.py --device cuda $BENCH_ARGS \
    --out "$WORK/bench/bench_torch.json" || true
[ -f "$WORK/bench/bench_torch.json" ] && cp "$WORK/bench/bench_torch.json" "$OUT/"
[ -n "$HEADLINE" ] || HEADLINE="ran on $gpu_line"
exit_by_steps
