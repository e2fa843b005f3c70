#!/usr/bin/env bash
# Build the `dfd serve` container image without any registry (see ../shared/docs/OFFLINE_ASSETS.md):
#   1. a Debian bookworm base image made with mmdebstrap from Debian's packages (python3 and the
#      libraries OpenCV needs), imported into podman; made once, reused;
#   2. a wheelhouse on the host: this project's wheel and its pinned slim dependencies ([serve], no torch);
#   3. `podman build` of the Containerfile, which installs from the wheelhouse only.
# Usage: scripts/build_image.sh [TAG]   (default localhost/deepfake-detection:<version>; prints the tag)
# Installs podman, runc and mmdebstrap with apt-get when they are missing and this runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="$PWD/deploy/containers.conf"

VERSION=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('deepfake-detection'))")
TAG=${1:-localhost/deepfake-detection:$VERSION}
BASE=localhost/dfd-debian-base:bookworm
# A private work folder: two builds at once (two test runs of one checkout) never share one.
WORK=$(mktemp -d -t dfd-image.XXXXXX); trap 'rm -rf "$WORK"' EXIT
# What the base image holds; a change here (or in the hooks below) makes a new base.
BASE_PACKAGES="ca-certificates,python3,python3-venv,libgl1,libglib2.0-0"
# opencv-python links libGL.so.1 (libgl1, the GLVND dispatcher) but never opens a GL context here;
# Mesa's drivers behind it (LLVM among them, ~170 MB) are removed. No docs, man pages or locales.
BASE_TRIM="libgl1-mesa-dri libllvm15 libz3-4"
BASE_HOOK="chroot \"\$1\" sh -c 'dpkg --purge --force-depends $BASE_TRIM >/dev/null 2>&1; apt-get clean; rm -rf /var/lib/apt/lists/*'"
BASE_OPTS=(--variant=minbase --include="$BASE_PACKAGES" --customize-hook="$BASE_HOOK"
           --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
           --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright')

need() { command -v "$1" >/dev/null 2>&1; }
if ! need podman || ! need runc || ! need mmdebstrap; then
  if [ "$(id -u)" = 0 ] && need apt-get; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc mmdebstrap \
      >/dev/null; } || { echo "build_image.sh: could not install podman, runc, mmdebstrap" >&2; exit 1; }
  else
    echo "build_image.sh: needs podman, runc and mmdebstrap (apt-get install podman runc mmdebstrap)" >&2
    exit 1
  fi
fi

base_id=$(echo "${BASE_OPTS[*]}" | sha256sum | cut -c1-12)
if [ "$(podman image inspect --format '{{index .Labels "dfd.base"}}' "$BASE" 2>/dev/null)" != "$base_id" ]; then
  echo "building the base image $BASE (mmdebstrap: Debian bookworm, minbase + $BASE_PACKAGES)" >&2
  mmdebstrap --quiet "${BASE_OPTS[@]}" bookworm "$WORK/base.tar"
  podman import --change "LABEL dfd.base=$base_id" --change 'CMD ["/bin/bash"]' "$WORK/base.tar" "$BASE" >/dev/null
  rm -f "$WORK/base.tar"
fi

# The wheelhouse: exactly the pinned slim dependencies, as wheels for the image's Python (3.11, as here).
mkdir -p "$WORK/context/wheelhouse"
scripts/build_wheel.sh "$WORK/context/wheelhouse" serve 2>&1 | grep -v "^WARNING: Location" >&2 || true
ls "$WORK/context/wheelhouse"/deepfake_detection-*.whl >/dev/null  # the build above must have made it
cp Containerfile "$WORK/context/"
podman --runtime runc build --quiet --format docker --build-arg "BASE=$BASE" --tag "$TAG" "$WORK/context" >/dev/null
podman image prune --force >/dev/null  # the build stage and earlier builds of this tag
echo "$TAG"
