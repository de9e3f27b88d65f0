#!/usr/bin/env bash
# Prepare .gpu_bundle/: what scripts/gpu_check.sh needs on an offline GPU machine with Python 3.12,
# numpy 2.x and a CUDA torch already installed, and at most 64 MiB brought along (this tree included).
#
#   scripts/gpu_bundle.sh           download (network: pip), stage, compress, then check the size
#   scripts/gpu_bundle.sh --check   only check the existing bundle against the budget (no network)
#
# The bundle (ignored by git; carry it to the GPU machine beside the working tree):
#   site.tar.xz     a site-packages folder for CPython 3.12 / manylinux x86_64: the server files of the
#                   nvidia-pytriton wheel (tritonserver, its libraries, the Python backend, the 3.12
#                   stub, caches; the pytriton package the benchmark's PyTriton setups import) and the
#                   wheels the GPU image lacks or holds in versions tritonclient does not accept
#   numpy1.tar.xz   numpy 1.26.4 for CPython 3.12: the fallback when the Python-backend stub (built with
#                   a pybind11 older than NumPy 2) cannot exchange tensors under the machine's numpy
#   prebuilt.tar.xz what `pytriton-torch build` compiled beside the package here (the tritonserver
#                   preload library; any other compiled part), for a machine without a C compiler
#   libpython.tar.xz  a stripped libpython3.12.so.1.0 (from $PYTHON312, else pyenv's 3.12), for a
#                   machine whose Python 3.12 has no shared libpython for the stub to load
#   MANIFEST.txt    sha256 and size of each file, the pinned versions, the build machine's glibc
#
# Dropped from the wheel to fit the budget: libpython3.13 (only the 3.13 stub links it) and the stubs
# for Pythons other than 3.12. Binaries are not stripped (auditwheel-patched ELF files can break).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
BUNDLE=${GPU_BUNDLE_DIR:-$REPO/.gpu_bundle}
BUDGET=$((64 * 1024 * 1024))
PYTRITON_WHEEL_VERSION=0.7.0
# Pinned to what this project's CI virtualenv resolves (tritonclient 2.73 wants protobuf>=6.30,
# grpcio>=1.81.1, greenlet<3.4, ml-dtypes<=0.5.4). Packages the GPU image already holds in usable
# versions (msgpack, wrapt, typer, rich, psutil, pytest, pytest-timeout, typing-inspect, urllib3,
# certifi, packaging, zipp) are not carried; gpu_check.sh checks their versions there.
WHEELS=(
    tritonclient==2.73.0 python-rapidjson==1.25 geventhttpclient==2.6.1 gevent==26.9.0 greenlet==3.3.2
    zope.event==6.2 zope.interface==8.7 brotli==1.2.1 pyzmq==27.3.0 grpcio==1.85.3 protobuf==6.33.6
    ml-dtypes==0.5.4 sh==2.4.0 importlib-metadata==10.2.0
)
PLATFORM=(
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none --only-binary=:all:
    --platform manylinux_2_35_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64
    --platform manylinux1_x86_64 --platform any
)
PIP=${PIP:-python3 -m pip}

# Bytes that travel with a device call besides the bundle: tracked and untracked-not-ignored files,
# and a shared/ folder inside the checkout (it travels even where git ignores it).
tree_bytes() {
    local files shared=0
    files=$(git ls-files -z --cached --others --exclude-standard -- . ':!:shared' \
        | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}')
    [ -d shared ] && shared=$(du -sb shared | cut -f1)
    echo $((files + shared))
}

mib() { awk -v b="$1" 'BEGIN {printf "%.2f", b / 1048576}'; }

check_size() {
    local bundle tree total
    [ -d "$BUNDLE" ] || { echo "no bundle at $BUNDLE: run scripts/gpu_bundle.sh first" >&2; return 1; }
    bundle=$(du -sb "$BUNDLE" | cut -f1)
    tree=$(tree_bytes)
    total=$((bundle + tree))
    printf '%-40s %8s\n' "what travels" "MiB"
    (cd "$BUNDLE" && find . -type f -printf '%s %p\n' | sort -k2) | while read -r size path; do
        printf '  %-38s %8s\n' "${path#./}" "$(mib "$size")"
    done
    printf '%-40s %8s\n' "bundle ($(basename "$BUNDLE"))" "$(mib "$bundle")"
    printf '%-40s %8s\n' "working tree (git, not ignored)" "$(mib "$tree")"
    printf '%-40s %8s  of %d budget\n' "total" "$(mib "$total")" $((BUDGET / 1048576))
    if [ "$total" -gt "$BUDGET" ]; then
        echo "OVER BUDGET by $(((total - BUDGET) / 1024)) KiB" >&2
        return 1
    fi
    echo "fits: $(((BUDGET - total) / 1024)) KiB to spare"
}

if [ "${1:-}" = "--check" ]; then
    check_size
    exit
fi

command -v xz >/dev/null || { echo "gpu_bundle.sh needs xz (apt-get install xz-utils)" >&2; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_bundle.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/wheels" "$WORK/site" "$WORK/numpy1"

echo "downloading cp312 wheels (nvidia-pytriton $PYTRITON_WHEEL_VERSION is ~53 MB)..."
$PIP download -q --no-deps "${PLATFORM[@]}" -d "$WORK/wheels" \
    "nvidia-pytriton==$PYTRITON_WHEEL_VERSION" "${WHEELS[@]}"
$PIP download -q --no-deps "${PLATFORM[@]}" -d "$WORK/numpy1" numpy==1.26.4

echo "staging a CPython 3.12 site-packages folder..."
$PIP install -q --no-deps --no-compile --no-index --target "$WORK/site" "${PLATFORM[@]}" "$WORK"/wheels/*.whl
SERVER=$WORK/site/pytriton/tritonserver
rm -f "$WORK"/site/nvidia_pytriton.libs/libpython3-*.13.so.1.0
find "$SERVER/python_backend_stubs" -mindepth 1 -maxdepth 1 ! -name 3.12 -exec rm -rf {} +
rm -rf "$WORK/site/bin"  # console scripts with this machine's interpreter path: unused there
find "$WORK/site" -name __pycache__ -type d -prune -exec rm -rf {} +
for needed in bin/tritonserver backends/python/libtriton_python.so \
    backends/python/triton_python_backend_utils.py python_backend_stubs/3.12/triton_python_backend_stub \
    caches/local/libtritoncache_local.so; do
    [ -e "$SERVER/$needed" ] || { echo "the nvidia-pytriton wheel has no $needed" >&2; exit 1; }
done
# Every library the server tree links must be in the tree or be a system library.
missing=$(find "$SERVER" "$WORK/site/nvidia_pytriton.libs" -type f \( -name '*.so*' -o -perm -u+x \) \
    -exec sh -c 'readelf -d "$1" 2>/dev/null' _ {} \; | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u \
    | grep -v -E '^(libc|libm|libdl|libpthread|librt|libresolv|libgcc_s|libstdc\+\+|libz|ld-linux-x86-64)\.so' \
    | grep -v -E '^libpython3\.12\.so' | while read -r lib; do
        [ -e "$WORK/site/nvidia_pytriton.libs/$lib" ] || echo "$lib"
    done)
if [ -n "$missing" ]; then
    echo "libraries linked by the server tree but not in it: $missing" >&2
    exit 1
fi

echo "building the compiled parts (pytriton-torch build)..."
PY=${VENV_PYTHON:-$REPO/.venv/bin/python}
"$PY" -m pytriton_torch.cli build
preload=$("$PY" -c 'from pytriton_torch._server._preload import packaged_library as p; print(p())')

echo "compressing (xz -9; a minute or two)..."
rm -rf "$BUNDLE"
mkdir -p "$BUNDLE"
tar -C "$WORK/site" --owner=0 --group=0 --numeric-owner -cf - . | xz -9 -T2 >"$BUNDLE/site.tar.xz"
mkdir -p "$WORK/numpy1/site"
$PIP install -q --no-deps --no-compile --no-index --target "$WORK/numpy1/site" "${PLATFORM[@]}" \
    "$WORK"/numpy1/numpy-*.whl
rm -rf "$WORK/numpy1/site/bin"
tar -C "$WORK/numpy1/site" --owner=0 --group=0 --numeric-owner -cf - . | xz -9 -T2 >"$BUNDLE/numpy1.tar.xz"
# Only the builds of the current sources: their names carry the source's hash.
git ls-files -z --others --ignored --exclude-standard -- 'pytriton_torch/*.so' \
    | tar --null -T - --owner=0 --group=0 --numeric-owner -cf - | xz -9 >"$BUNDLE/prebuilt.tar.xz"
PY312=${PYTHON312:-$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)}
libpython=$([ -x "$PY312" ] && "$PY312" -c 'import sysconfig as s, os
p = os.path.join(s.get_config_var("LIBDIR") or "", "libpython3.12.so.1.0")
print(p if os.path.exists(p) else "")' || true)
if [ -n "$libpython" ]; then
    mkdir -p "$WORK/libpython"
    strip --strip-unneeded -o "$WORK/libpython/libpython3.12.so.1.0" "$libpython"
    tar -C "$WORK/libpython" --owner=0 --group=0 --numeric-owner -cf - . | xz -9 >"$BUNDLE/libpython.tar.xz"
else
    echo "warning: no CPython 3.12 with a shared libpython here (set PYTHON312): bundle made without one" >&2
fi

{
    echo "# made by scripts/gpu_bundle.sh on $(uname -m), $(ldd --version | head -1)"
    echo "# preload library needs: $(objdump -T "$preload" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)"
    [ -z "$libpython" ] || echo "# libpython.tar.xz: $libpython ($("$PY312" -V))"
    echo "nvidia-pytriton==$PYTRITON_WHEEL_VERSION (server files only; stubs: 3.12)"
    printf '%s\n' "${WHEELS[@]}" numpy==1.26.4
    echo "# sha256  bytes  file"
    (cd "$BUNDLE" && find . -type f ! -name MANIFEST.txt | sort | while read -r f; do
        echo "$(sha256sum "$f" | cut -d' ' -f1)  $(stat -c %s "$f")  ${f#./}"
    done)
} >"$BUNDLE/MANIFEST.txt"
check_size
