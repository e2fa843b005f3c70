#!/usr/bin/env bash
# The project's test command (README, CI): install, lint, type-check, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
.venv/bin/ruff check src tests scripts benchmarks
.venv/bin/mypy
# The browser test fails, never skips, when chromium is missing here.
DFD_REQUIRE_BROWSER=1 .venv/bin/python -m pytest -q "$@"
