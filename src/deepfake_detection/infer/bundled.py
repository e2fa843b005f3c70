"""Where the bundled default model lives: package data (`deepfake_detection/bundled/`), so a wheel
carries it. Each file has a `<file>.sha256` sidecar that is checked at load time, so a damaged or
swapped file is refused. `DFD_DEFAULT_MODEL` points elsewhere (a file path) when set.
"""

from __future__ import annotations

import os
from pathlib import Path

from deepfake_detection.errors import ModelError

DEFAULT_MODEL_FILE = "default.onnx"
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "bundled"  # installed as package data


def default_model_path() -> Path:
    override = os.environ.get("DFD_DEFAULT_MODEL")
    if override:
        return Path(override)
    path = BUNDLED_DIR / DEFAULT_MODEL_FILE
    if not path.exists():
        raise ModelError(
            f"the bundled default model is missing ({path}); pass a model file with --model, "
            "or set DFD_DEFAULT_MODEL"
        )
    return path

