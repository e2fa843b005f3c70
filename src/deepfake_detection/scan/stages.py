"""The two stages of a scan, run by Ray Data in other processes.

`detect_batch` (stateless tasks, one CPU each): read, decode, detect and crop a block of inputs with
the Predictor's own `prepare_image`; the detector is built once per worker process. Crops travel to
the next stage as raw bytes (model-sized RGB, no re-encoding loss), faces as JSON.

`Classifier` (an actor pool): loads the model once per actor, scores the crops of a batch of images
in one go and builds the results with the Predictor's own `finish_results`.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa

from deepfake_detection.errors import DFDError
from deepfake_detection.faces import Face, FaceDetector, create_detector
from deepfake_detection.infer.predictor import Prepared, finish_results, item_error, prepare_image
from deepfake_detection.io.images import DEFAULT_MAX_BYTES
from deepfake_detection.io.sources import InputItem
from deepfake_detection.models.spec import ModelSpec
from deepfake_detection.scan.inputs import is_uri, read_uri
from deepfake_detection.scan.schema import input_item, results_table

PREPARED_SCHEMA = pa.schema([
    ("id", pa.int64()), ("path", pa.binary()), ("error", pa.binary()),  # bytes: names need not be UTF-8
    ("width", pa.int64()), ("height", pa.int64()),
    ("timings", pa.string()),  # JSON {stage: ms}
    ("faces", pa.string()),  # JSON [[box(4), score, landmarks(5x2) | null], ...]
    ("crops", pa.binary()),  # (n, S, S, 3) uint8: the faces' crops, or the whole image when no face
    ("n_crops", pa.int64()),
])

_DETECTORS: dict[str, FaceDetector] = {}  # per worker process: built on its first block


def _detector(name: str) -> FaceDetector:
    if name not in _DETECTORS:
        import cv2

        cv2.setNumThreads(1)  # one task per CPU: threads inside would fight over the same cores
        extra = {"threads": 1} if name in ("auto", "retinaface") else {}
        _DETECTORS[name] = create_detector(name, **extra)
    return _DETECTORS[name]


def encode_prepared(item_id: int, p: Prepared) -> dict[str, Any]:
    crops = p.crops if p.faces else ([p.whole_image] if p.whole_image is not None else [])
    faces = [[[float(v) for v in f.box], float(f.score),
              None if f.landmarks is None else f.landmarks.tolist()] for f in p.faces]
    return {"id": item_id, "path": None if p.path is None else os.fsencode(p.path),
            "error": None if p.error is None else os.fsencode(p.error),
            "width": None if p.image_size is None else p.image_size[0],
            "height": None if p.image_size is None else p.image_size[1],
            "timings": json.dumps(p.timings_ms), "faces": json.dumps(faces),
            "crops": np.stack(crops).tobytes() if crops else b"", "n_crops": len(crops)}


def decode_prepared(row: dict[str, Any], size: int) -> Prepared:
    faces = [Face(np.asarray(box, np.float32), score, None if lm is None else np.asarray(lm, np.float32))
             for box, score, lm in json.loads(row["faces"])]
    crops = list(np.frombuffer(row["crops"], np.uint8).reshape(row["n_crops"], size, size, 3))
    size_wh = None if row["width"] is None else (int(row["width"]), int(row["height"]))
    return Prepared(None if row["path"] is None else os.fsdecode(row["path"]), faces=faces,
                    crops=crops if faces else [], whole_image=crops[0] if crops and not faces else None,
                    image_size=size_wh, timings_ms=json.loads(row["timings"]),
                    error=None if row["error"] is None else os.fsdecode(row["error"]))


def prepare_input(item: InputItem, detector: FaceDetector, spec: ModelSpec, max_pixels: int) -> Prepared:
    error = item_error(item)
    if error is not None:
        return Prepared(item.path, error=error)
    if item.is_video:
        return Prepared(item.path, error="UnsupportedFormatError: dfd scan scores images; score videos "
                        "with dfd detect or Predictor.predict_video")
    if not is_uri(item.path):
        return prepare_image(item.path, item.path, detector, spec, max_pixels=max_pixels)
    try:
        data = read_uri(item.path, DEFAULT_MAX_BYTES)
    except DFDError as exc:
        return Prepared(item.path, error=f"{type(exc).__name__}: {exc}")
    return prepare_image(data, item.path, detector, spec, max_pixels=max_pixels)


def detect_batch(batch: pa.Table, *, spec_json: str, detector: str, max_pixels: int) -> pa.Table:
    """Stage 1 (a Ray task per block): inputs (id, path, missing) -> prepared images."""
    spec = ModelSpec.from_json(spec_json)
    det = _detector(detector)
    rows = [encode_prepared(r["id"], prepare_input(input_item(r), det, spec, max_pixels))
            for r in batch.to_pylist()]
    return pa.Table.from_pylist(rows, schema=PREPARED_SCHEMA)


class Classifier:
    """Stage 2 (an actor per CPU slot or GPU): prepared images -> result rows (schema.RESULT_SCHEMA)."""

    def __init__(self, model: str, backend: str = "auto", *, threshold: float | None = None,
                 batch_size: int = 32, threads: int = 1, device: str = "cpu") -> None:
        from deepfake_detection.infer.backends import load_backend

        # A GPU runs the PyTorch weights; CPUs the ONNX export when there is one (as `dfd detect`).
        kind = "torch" if device != "cpu" else backend
        self.backend = load_backend(model, kind, threads=threads, device=device)  # type: ignore[arg-type]
        spec = self.backend.spec
        self.spec = spec if threshold is None else replace(spec, threshold=threshold)
        self.batch_size = batch_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        prepared = [decode_prepared(r, self.spec.input_size) for r in rows]
        results = finish_results(prepared, self.backend, self.spec, batch_size=self.batch_size)
        return results_table([r["id"] for r in rows], results)
