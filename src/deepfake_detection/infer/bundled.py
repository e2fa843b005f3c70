"""Where the bundled default model lives, and its integrity check.

The repository carries it under `models/` (weights, spec and ONNX export); each file has a
`<file>.sha256` sidecar that is checked at load time, so a damaged or swapped file is refused.
`DFD_DEFAULT_MODEL` points elsewhere (a file path) when set.
"""

from __future__ import annotations

import os
from pathlib import Path

from deepfake_detection.errors import ModelError
from deepfake_detection.io.atomic import write_text_atomic
from deepfake_detection.models.files import sha256_file

DEFAULT_MODEL_FILE = "default.onnx"
_REPO_MODELS = Path(__file__).resolve().parents[3] / "models"


def default_model_path() -> Path:
    override = os.environ.get("DFD_DEFAULT_MODEL")
    if override:
        return Path(override)
    path = _REPO_MODELS / DEFAULT_MODEL_FILE
    if not path.exists():
        raise ModelError(
            f"the bundled default model is missing ({path}); pass a model file with --model, "
            "or set DFD_DEFAULT_MODEL"
        )
    return path


def checksum_sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def verify_checksum(path: Path, *, required: bool = False) -> str:
    """Return the file's sha256; compare it with `<file>.sha256` when that sidecar exists."""
    digest = sha256_file(path)
    sidecar = checksum_sidecar(path)
    if sidecar.exists():
        expected = sidecar.read_text(encoding="ascii").split()[0].strip().lower()
        if digest != expected:
            raise ModelError(f"{path}: sha256 {digest} does not match {sidecar.name} ({expected})")
    elif required:
        raise ModelError(f"{path}: checksum file {sidecar.name} is missing")
    return digest


def write_checksum(path: Path) -> str:
    digest = sha256_file(path)
    write_text_atomic(checksum_sidecar(path), f"{digest}  {path.name}\n", encoding="ascii")
    return digest
