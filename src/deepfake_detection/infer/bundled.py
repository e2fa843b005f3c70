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
# Names `--model` accepts for the models shipped in BUNDLED_DIR (the model card says what each is for).
BUNDLED_MODELS = {"default": DEFAULT_MODEL_FILE}


def default_model_path() -> Path:
    override = os.environ.get("DFD_DEFAULT_MODEL")
    if override:
        return Path(override)
    return bundled_model_path("default")


def bundled_model_path(name: str) -> Path:
    """The file of a bundled model by name (see BUNDLED_MODELS)."""
    if name not in BUNDLED_MODELS:
        raise ModelError(f"no bundled model named {name!r}; bundled: {', '.join(BUNDLED_MODELS)}")
    path = BUNDLED_DIR / BUNDLED_MODELS[name]
    if not path.exists():
        hint = ", or set DFD_DEFAULT_MODEL" if name == "default" else ""
        raise ModelError(f"the bundled {name} model is missing ({path}); "
                         f"pass a model file with --model{hint}")
    return path


def resolve_model(model: str | os.PathLike[str] | None) -> tuple[Path, bool]:
    """(file, bundled) for a `--model` value: None and "default" are the default model (or
    DFD_DEFAULT_MODEL), another bundled model's name is that model, anything else a path (./NAME for a
    file so named). `bundled`: its checksum sidecar is required."""
    name = None if model is None else os.fspath(model)
    if name is None or name == "default":
        return default_model_path(), True
    if name in BUNDLED_MODELS:
        return bundled_model_path(name), True
    return Path(name), False
