#!/usr/bin/env bash
# The project's test command (README, CI): install, lint, type-check, run every test, the slow tier
# included (notebook, browser, Ray, torchrun, wheel, container). While working, the fast tier is
#   .venv/bin/python -m pytest -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
.venv/bin/ruff check src tests scripts benchmarks notebooks
.venv/bin/mypy
# The browser and container tests fail, never skip, when chromium or podman is missing here.
DFD_REQUIRE_BROWSER=1 DFD_REQUIRE_CONTAINER=1 .venv/bin/python -m pytest -q "$@"
