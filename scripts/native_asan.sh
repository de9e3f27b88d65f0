#!/usr/bin/env bash
# Run integration tests with the native backend built under AddressSanitizer + UBSan, loaded into
# tritonserver (libasan preloaded there and in the test process; leak checks off: Python and Triton
# keep memory until exit by design). Any memory error in the backend aborts tritonserver and fails
# the tests that were using it.
#
#   scripts/native_asan.sh [pytest args]   (default: the native tests and the core suite on native)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CC=${CC:-gcc}
cache=$(mktemp -d /tmp/ptt-asan-XXXXXX)
trap 'rm -rf "$cache"' EXIT
chmod 700 "$cache"
export XDG_CACHE_HOME=$cache
# The library a start would use, by name (per-user cache, named by the source's hash), built instrumented.
target=$("$PY" -c 'import pathlib, os; from pytriton_torch._server import _preload as p
print(pathlib.Path(os.environ["XDG_CACHE_HOME"]) / "pytriton_torch" / f"backend-{p._digest(p.BACKEND_SOURCE)}.so")')
mkdir -p -m 700 "$(dirname "$target")"
"$CC" -O1 -g -shared -fPIC -Wall -Wextra -Werror -fsanitize=address,undefined -fno-omit-frame-pointer \
    -o "$target" pytriton_torch/_server/_backend.c
chmod 700 "$target"
export LD_PRELOAD="$("$CC" -print-file-name=libasan.so):$("$CC" -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:verify_asan_link_order=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
if [ $# -eq 0 ]; then
    # Left out: after its owner is SIGKILLed, an ASan-preloaded tritonserver hangs in dlclose() of the
    # instrumented backend at exit (the normal build exits at once; the test passes there).
    set -- tests/integration/test_native.py tests/integration/test_core.py -k "native and not killed_owner"
fi
"$PY" -m pytest -q -p no:cacheprovider "$@"
