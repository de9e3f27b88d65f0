#!/usr/bin/env bash
# Install everything the test suite needs into .venv and run it (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch==2.13.0 is pinned so pip takes the local CPU build instead of a multi-GB CUDA one.
.venv/bin/python -m pip install -q -e '.[test]' torch==2.13.0
.venv/bin/ruff check .
.venv/bin/mypy
# Docs site: broken links, nav entries and API references fail the build (no network needed).
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet
.venv/bin/pytest -q -p no:cacheprovider "$@"
