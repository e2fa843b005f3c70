#!/usr/bin/env bash
# Build this project's wheel from a private copy of its sources, so that nothing is written into the
# checkout: setuptools builds in the source tree (build/, src/*.egg-info), and two builds of one checkout
# at once (two test runs, the wheel test beside scripts/build_image.sh) would share those folders.
# Usage: scripts/build_wheel.sh OUT_DIR [EXTRAS [pip wheel option...]]
#   scripts/build_wheel.sh dist              this project's wheel only (--no-deps)
#   scripts/build_wheel.sh wheelhouse serve  the wheel and every pinned dependency of its `serve` extra
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$1; extras=${2:-}; shift $(( $# < 2 ? $# : 2 ))
python=${PYTHON:-$repo/.venv/bin/python}
deps=(); [ -n "$extras" ] || deps=(--no-deps)
copy=$(mktemp -d -t dfd-wheel.XXXXXX); trap 'rm -rf "$copy"' EXIT
# What the wheel is made of (pyproject.toml: the package under src/, its data, the README)
cp "$repo/pyproject.toml" "$repo/README.md" "$copy/"
mkdir "$copy/src" && cp -r "$repo/src/deepfake_detection" "$copy/src/"
find "$copy" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p "$out"
"$python" -m pip wheel --quiet --disable-pip-version-check "${deps[@]}" --wheel-dir "$out" \
  "$copy${extras:+[$extras]}" "$@"
