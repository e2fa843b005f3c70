"""Model files on disk, the rules in one place (no torch, no onnx: the slim install uses this).

- A model is `<stem>.onnx` (ONNX Runtime) and/or `<stem>.safetensors` (PyTorch weights); both carry
  the ModelSpec as JSON under the metadata key `SPEC_KEY`.
- Pickle formats are refused: loading them can run code.
- `<file>.sha256` beside a file holds its digest (`sha256sum` format); it is checked at load time
  when present, and required for the bundled model.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

from deepfake_detection.errors import ModelError
from deepfake_detection.io.atomic import write_text_atomic

SPEC_KEY = "dfd_spec"  # metadata key of the ModelSpec JSON in .onnx and .safetensors files
ONNX_SUFFIX, WEIGHTS_SUFFIX = ".onnx", ".safetensors"
PICKLE_SUFFIXES = frozenset({".pth", ".pt", ".pkl", ".pickle", ".ckpt", ".bin", ".tar"})


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


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


def refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelError(f"refusing {path}: pickle-based files can run code; use .safetensors or .onnx")


def siblings(path: Path) -> tuple[Path, Path]:
    """(`<stem>.onnx`, `<stem>.safetensors`) for a model path given with either suffix or none."""
    refuse_pickle(path)
    stem = path.with_suffix("") if path.suffix.lower() in (ONNX_SUFFIX, WEIGHTS_SUFFIX) else path
    return stem.with_name(stem.name + ONNX_SUFFIX), stem.with_name(stem.name + WEIGHTS_SUFFIX)


def weights_for(path: Path) -> Path | None:
    """The PyTorch weights of a model (the file itself or the .safetensors beside an .onnx), if any."""
    weights = siblings(path)[1]
    return weights if weights.is_file() else None


def onnx_for(path: Path) -> Path:
    """The ONNX export of a model (the file itself or the .onnx beside a .safetensors)."""
    return siblings(path)[0]


def resolve_model_file(path: Path, kind: str) -> tuple[Path, str]:
    """The file to load for `kind` ('auto', 'onnx', 'torch') and the backend it needs ('onnx'/'torch').
    'auto' with a stem or a .safetensors path prefers the sibling .onnx (faster on CPU) when it exists
    and is not older than the weights (a stale export would silently give old answers)."""
    onnx_path, st_path = siblings(path)
    suffix = path.suffix.lower()
    model_suffix = suffix in (ONNX_SUFFIX, WEIGHTS_SUFFIX)
    if not model_suffix and path.is_file():  # `--model photo.jpg`: say so, not "photo.jpg.onnx not found"
        raise ModelError(f"{path} is not a model file: models are .onnx or .safetensors files")
    if path.is_dir():
        raise ModelError(f"{path} is a folder: name a model file (.onnx or .safetensors)")
    if kind == "onnx" or (kind == "auto" and suffix == ONNX_SUFFIX):
        chosen = onnx_path
    elif kind == "torch":
        chosen = st_path
    elif kind == "auto":
        chosen = st_path
        if onnx_path.is_file():
            if st_path.is_file() and onnx_path.stat().st_mtime < st_path.stat().st_mtime:
                warnings.warn(f"{onnx_path} is older than {st_path}; using the .safetensors", stacklevel=3)
            else:
                chosen = onnx_path
    else:
        raise ModelError(f"backend kind must be 'auto', 'onnx' or 'torch', not {kind!r}")
    if not chosen.is_file():
        tried = chosen if kind != "auto" or model_suffix else f"{onnx_path} or {st_path}"
        raise ModelError(f"model file not found: {tried}")
    return chosen, "onnx" if chosen.suffix == ONNX_SUFFIX else "torch"
