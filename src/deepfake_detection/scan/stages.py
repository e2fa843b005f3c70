"""The two stages of a scan, run by Ray Data in other processes; each builds a Predictor (the one
inference contract) once per worker process and runs one half of it.

`detect_batch` (stateless tasks, one CPU each): read, decode, detect and crop a block of inputs with
`Predictor.prepare`. Crops travel to the next stage as raw bytes (model-sized RGB, no re-encoding
loss), faces as JSON.

`Classifier` (an actor pool): scores the crops of a batch of images in one go and builds the results
with `Predictor.finish`.
"""

from __future__ import annotations

import json
import os
from functools import cache
from typing import Any

import numpy as np
import pyarrow as pa

from deepfake_detection.errors import DFDError
from deepfake_detection.faces import Face
from deepfake_detection.infer.predictor import Predictor, Prepared, item_error
from deepfake_detection.io.images import DEFAULT_MAX_BYTES
from deepfake_detection.io.sources import InputItem
from deepfake_detection.scan.inputs import is_uri, read_uri
from deepfake_detection.scan.schema import input_item, results_table

PREPARED_SCHEMA = pa.schema([
    ("id", pa.int64()), ("path", pa.binary()), ("error", pa.binary()),  # bytes: names need not be UTF-8
    ("width", pa.int64()), ("height", pa.int64()),
    ("timings", pa.string()),  # JSON {stage: ms}
    ("faces", pa.string()),  # JSON [[box(4), score, landmarks(5x2) | null, sharpness], ...]
    ("crops", pa.binary()),  # (n, S, S, 3) uint8: the faces' crops, or the whole image when no face
    ("n_crops", pa.int64()),
])


@cache
def _detect_predictor(model: str, backend: str, detector: str, max_pixels: int) -> Predictor:
    """The stage-1 predictor of this worker process (built on its first block)."""
    import cv2

    cv2.setNumThreads(1)  # one task per CPU: threads inside would fight over the same cores
    return Predictor.load(model, backend=backend, detector=detector, max_pixels=max_pixels,  # type: ignore[arg-type]
                          threads=1)


def encode_prepared(item_id: int, p: Prepared) -> dict[str, Any]:
    crops = p.crops
    faces = [[[float(v) for v in f.box], float(f.score),
              None if f.landmarks is None else f.landmarks.tolist(), sharpness]
             for f, sharpness in zip(p.faces, p.sharpness, strict=True)]
    return {"id": item_id, "path": None if p.path is None else os.fsencode(p.path),
            "error": None if p.error is None else os.fsencode(p.error),
            "width": None if p.image_size is None else p.image_size[0],
            "height": None if p.image_size is None else p.image_size[1],
            "timings": json.dumps(p.timings_ms), "faces": json.dumps(faces),
            "crops": np.stack(crops).tobytes() if crops else b"", "n_crops": len(crops)}


def decode_prepared(row: dict[str, Any], size: int) -> Prepared:
    listed = json.loads(row["faces"])
    faces = [Face(np.asarray(box, np.float32), score, None if lm is None else np.asarray(lm, np.float32))
             for box, score, lm, _ in listed]
    crops = list(np.frombuffer(row["crops"], np.uint8).reshape(row["n_crops"], size, size, 3))
    size_wh = None if row["width"] is None else (int(row["width"]), int(row["height"]))
    return Prepared(None if row["path"] is None else os.fsdecode(row["path"]), faces=faces, crops=crops,
                    sharpness=[sharpness for *_, sharpness in listed], image_size=size_wh,
                    timings_ms=json.loads(row["timings"]),
                    error=None if row["error"] is None else os.fsdecode(row["error"]))


def prepare_input(item: InputItem, predictor: Predictor) -> Prepared:
    error = item_error(item)
    if error is not None:
        return Prepared(item.path, error=error)
    if item.is_video:
        return Prepared(item.path, error="UnsupportedFormatError: dfd scan scores images; score videos "
                        "with dfd detect or Predictor.predict_video")
    if not is_uri(item.path):
        return predictor.prepare(item.path, item.path)
    try:
        data = read_uri(item.path, DEFAULT_MAX_BYTES)
    except DFDError as exc:
        return Prepared(item.path, error=f"{type(exc).__name__}: {exc}")
    return predictor.prepare(data, item.path)


def detect_batch(batch: pa.Table, *, model: str, backend: str, detector: str, max_pixels: int) -> pa.Table:
    """Stage 1 (a Ray task per block): inputs (id, path, missing) -> prepared images."""
    predictor = _detect_predictor(model, backend, detector, max_pixels)
    rows = [encode_prepared(r["id"], prepare_input(input_item(r), predictor))
            for r in batch.to_pylist()]
    return pa.Table.from_pylist(rows, schema=PREPARED_SCHEMA)


class Classifier:
    """Stage 2 (an actor per CPU slot or GPU): prepared images -> result rows (schema.RESULT_SCHEMA)."""

    def __init__(self, model: str, backend: str = "auto", *, threshold: float | None = None,
                 detector: str = "auto", batch_size: int = 32, threads: int = 1, device: str = "cpu") -> None:
        # A GPU runs the PyTorch weights; CPUs the ONNX export when there is one (as `dfd detect`).
        kind = "torch" if device != "cpu" else backend
        self.predictor = Predictor.load(model, backend=kind, threshold=threshold,  # type: ignore[arg-type]
                                        detector=detector, batch_size=batch_size, threads=threads,
                                        device=device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        prepared = [decode_prepared(r, self.predictor.spec.input_size) for r in rows]
        return results_table([r["id"] for r in rows], self.predictor.finish(prepared))
