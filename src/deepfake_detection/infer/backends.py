"""Inference backends: one small interface over ONNX Runtime and PyTorch.

Model files are .onnx or .safetensors only; pickle formats (.pth/.pt/.pkl/.ckpt) are refused because
loading them can execute code."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from deepfake_detection.errors import ModelError
from deepfake_detection.models.paths import (
    SPEC_KEY,
    checksum_sidecar,
    resolve_model_file,
    sha256_file,
    verify_checksum,
)
from deepfake_detection.models.spec import ModelSpec
from deepfake_detection.runtime import ort_session_options

if TYPE_CHECKING:
    from torch import nn

class Backend(Protocol):
    @property
    def spec(self) -> ModelSpec: ...

    @property
    def name(self) -> str: ...  # "onnxruntime" / "torch"

    @property
    def sha256(self) -> str: ...  # of the model file; "" when built from an in-memory model

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """(N,3,S,S) float32 normalised -> (N,) float32 logits."""
        ...


def _check_batch(batch: np.ndarray, spec: ModelSpec) -> np.ndarray:
    s = spec.input_size
    if batch.ndim != 4 or batch.shape[1:] != (3, s, s):
        raise ModelError(f"expected a (N,3,{s},{s}) batch for {spec.arch}, got {batch.shape}")
    # No copy when the batch is already float32 C-contiguous (to_batch's output is).
    return np.ascontiguousarray(batch, dtype=np.float32)


class OnnxBackend:
    name = "onnxruntime"

    def __init__(
        self, path: str | os.PathLike[str], *, threads: int | None = None, providers: list[str] | None = None,
        sha256: str | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self._sha256 = sha256  # known when the file was just checked against its sidecar
        if not self.path.is_file():
            raise ModelError(f"ONNX model file not found: {self.path}")
        opts = ort_session_options(threads)
        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=opts, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... types
            raise ModelError(f"cannot load ONNX model {self.path}: {exc}") from exc
        meta = self._session.get_modelmeta().custom_metadata_map
        if SPEC_KEY not in meta:
            raise ModelError(f"{self.path} has no {SPEC_KEY!r} metadata; not a deepfake-detection model")
        self.spec = ModelSpec.from_json(meta[SPEC_KEY])
        # Cached once: per-call lookups matter at batch size 1 (a few ms per crop).
        self._input = self._session.get_inputs()[0].name
        self._outputs = [self._session.get_outputs()[0].name]

    @property
    def sha256(self) -> str:  # lazy: hashing VGG16 (530 MB) costs ~1 s and is rarely needed
        if self._sha256 is None:
            self._sha256 = sha256_file(self.path)
        return self._sha256

    def logits(self, batch: np.ndarray) -> np.ndarray:
        out = self._session.run(self._outputs, {self._input: _check_batch(batch, self.spec)})[0]
        return np.asarray(out, np.float32).reshape(-1)


class TorchBackend:
    name = "torch"

    def __init__(self, model: nn.Module, spec: ModelSpec, *, device: str = "cpu", sha256: str = "") -> None:
        import torch

        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.spec = spec
        self.sha256 = sha256

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, device: str = "cpu", sha256: str | None = None
                  ) -> TorchBackend:
        from deepfake_detection.models.files import load_model_file

        model, spec = load_model_file(path)
        return cls(model, spec, device=device, sha256=sha256 or sha256_file(path))

    def logits(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(_check_batch(batch, self.spec)).to(self.device)
        with torch.inference_mode():
            out = self.model(x)
        return out.float().cpu().numpy().reshape(-1)


def load_backend(
    path: str | os.PathLike[str], kind: Literal["auto", "onnx", "torch"] = "auto", *,
    threads: int | None = None, device: str = "cpu", require_checksum: bool = False,
) -> Backend:
    """.onnx -> OnnxBackend, .safetensors -> TorchBackend; which file for `kind`: see
    models/paths.py (resolve_model_file).
    `threads` sizes ONNX Runtime (default: all cores); `device` places a PyTorch model.
    The file actually loaded is checked against its `<file>.sha256` sidecar when it has one (required
    with `require_checksum`, as for the bundled model); the digest is kept, so it is hashed once."""
    chosen, resolved = resolve_model_file(Path(path), kind)
    digest = None
    if require_checksum or checksum_sidecar(chosen).exists():
        digest = verify_checksum(chosen, required=require_checksum)
    if resolved == "onnx":
        if device != "cpu":  # an override that would be ignored is refused
            raise ModelError(f"{chosen.name} runs on ONNX Runtime's CPU provider; device={device!r} needs "
                             "the PyTorch weights (backend 'torch')")
        return OnnxBackend(chosen, threads=threads, sha256=digest)
    return TorchBackend.from_file(chosen, device=device, sha256=digest)


def spec_logits(backend: Backend, batch: np.ndarray) -> np.ndarray:
    """The model's logits for a preprocessed NCHW batch as its spec defines them: with `tta_hflip`, the
    mean over each crop and its mirror image (one backend call of twice the batch)."""
    if not backend.spec.tta_hflip:
        return backend.logits(batch)
    n = len(batch)
    both = backend.logits(np.concatenate([batch, batch[..., ::-1]]))
    return (both[:n] + both[n:]) / 2


def crop_probabilities(backend: Backend, crops: Sequence[np.ndarray], *, batch_size: int = 32) -> np.ndarray:
    """Calibrated fake probabilities (the spec's temperature and bias) for model-sized RGB crops, in batches:
    the one scoring path shared by the Predictor and `dfd evaluate`."""
    from deepfake_detection.infer.preprocess import sigmoid_probability, to_batch

    out = [sigmoid_probability(spec_logits(backend, to_batch(list(crops[i : i + batch_size]), backend.spec)),
                               backend.spec.temperature, backend.spec.bias)
           for i in range(0, len(crops), batch_size)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)
