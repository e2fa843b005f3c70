"""Scoring a manifest's SOURCE files through the product's own path, as `dfd detect` does.

Stored crops are what training sees; users get decode -> detect -> crop -> classify on their files.
Figures measured on stored crops can differ from what users see (another detector, another crop, a
missing face), so `dfd evaluate` and the threshold/temperature fit use this path by default:

* images: the source file is decoded and given to `Predictor.predict` (after the same black padding
  `dfd prepare --pad` gave tight face crops, read from the manifest folder's prepare.json);
* videos: `frames` evenly spaced frames are decoded and each goes through `Predictor.predict_batch`
  (frame level: the highest face score of the frame); the video's verdict is
  `Predictor.predict_video` (tracks, trimmed means), exactly what `dfd detect clip.mp4` prints.

A frame row's `blurry` says whether its result carried the blurry-face warning (faces/quality.py).
A source where no face is found gives no frame row: it is counted in `no_face`, as `dfd detect`
reports it (status no_face), not silently dropped. Perturbations (robustness) degrade the decoded
image or frame before detection, as a re-encoded or resized upload would be.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from deepfake_detection.data.layouts._registry import media_kind
from deepfake_detection.errors import DFDError

log = logging.getLogger(__name__)

SOURCE_COLUMNS = ("source_id", "source_path", "label", "method", "dataset", "group")


@dataclass
class PathScores:
    """Frame rows (one per scored image or video frame), video rows (one per video) and what failed."""

    frames: pd.DataFrame
    videos: pd.DataFrame
    perturbed: dict[str, np.ndarray] = field(default_factory=dict)  # aligned with `frames`
    no_face: list[str] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)


def _sources(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in SOURCE_COLUMNS if c not in df.columns]
    if missing:
        raise DFDError(f"cannot score source files: manifest lacks {missing}")
    return df.drop_duplicates("source_id")[list(SOURCE_COLUMNS)].reset_index(drop=True)


def score_sources(predictor: Any, df: pd.DataFrame, *, pad: float | None = None, frames: int = 16,
                  video_frames: int | None = 32, perturbations: Sequence[str] = (),
                  progress: Callable[[int, int], None] | None = None) -> PathScores:
    """Score every source of `df` (a manifest slice) with `predictor` (see the module docstring).
    `pad`: the images' padding; None: each row's `source_pad` column (0 without one)."""
    from deepfake_detection.data.prepare import pad_image
    from deepfake_detection.evaluate.robustness import PERTURBATIONS
    from deepfake_detection.io.images import load_image
    from deepfake_detection.io.video import sample_frames

    sources = _sources(df)
    pads = (df.drop_duplicates("source_id")["source_pad"].to_numpy(np.float64) if pad is None
            and "source_pad" in df.columns else np.full(len(sources), pad or 0.0))
    frame_rows: list[dict[str, Any]] = []
    video_rows: list[dict[str, Any]] = []
    perturbed: dict[str, list[float]] = {name: [] for name in perturbations}
    result = PathScores(pd.DataFrame(), pd.DataFrame())
    for n, src in enumerate(sources.itertuples(index=False)):
        meta = {c: getattr(src, c) for c in SOURCE_COLUMNS}
        path = str(src.source_path)
        try:
            if media_kind(path) == "video":
                images = [(i, frame) for i, frame in sample_frames(path, count=frames)]
                verdict = predictor.predict_video(path, frames=video_frames)
                if verdict.fake_probability is not None and verdict.status == "ok":
                    video_rows.append({**meta, "score": verdict.fake_probability, "frames": verdict.frames})
            else:
                images = [(0, pad_image(load_image(path, max_pixels=predictor.max_pixels), float(pads[n])))]
        except DFDError as exc:
            result.errors.append({"path": path, "error": f"{type(exc).__name__}: {exc}"})
            continue
        clean = predictor.predict_batch([im for _, im in images])
        kept = [k for k, r in enumerate(clean) if r.status == "ok" and r.fake_probability is not None]
        if not kept:
            result.no_face.append(path)
        for k in kept:
            frame_rows.append({**meta, "frame_index": images[k][0], "score": clean[k].fake_probability,
                               "faces": len(clean[k].faces),
                               "blurry": any(bool(f.blurry) for f in clean[k].faces)})  # warned
        for name in perturbations:
            degraded = predictor.predict_batch([PERTURBATIONS[name](images[k][1]) for k in kept])
            # A face the degraded image hides scores 0 ("no fake found"), as the verdict users get.
            perturbed[name] += [r.fake_probability or 0.0 for r in degraded]
        if progress is not None:
            progress(n + 1, len(sources))
    result.frames = pd.DataFrame(frame_rows,
                                 columns=[*SOURCE_COLUMNS, "frame_index", "score", "faces", "blurry"])
    result.videos = pd.DataFrame(video_rows, columns=[*SOURCE_COLUMNS, "score", "frames"])
    result.perturbed = {name: np.asarray(v, np.float64) for name, v in perturbed.items()}
    if result.no_face or result.errors:
        log.info("%d sources without a face, %d unreadable", len(result.no_face), len(result.errors))
    return result


def raw_logits(probabilities: np.ndarray, temperature: float, bias: float = 0.0) -> np.ndarray:
    """The model's logits back from calibrated probabilities p = sigmoid(z / T + b):
    z = T * (logit(p) - b)."""
    p = np.clip(np.asarray(probabilities, np.float64), 1e-7, 1 - 1e-7)
    return temperature * (np.log(p / (1 - p)) - bias)


@dataclass(frozen=True)
class Fit:
    """Calibration and threshold fitted on validation frames (probability = sigmoid(z / T + bias))."""

    temperature: float
    bias: float
    threshold: float
    frames: int


def fit_on_product_path(predictor: Any, val_rows: pd.DataFrame, *, strategy: str, target_fpr: float,
                        frames: int = 8, calibration: str = "platt", jpeg_quality: int | None = None) -> Fit:
    """Calibration (`calibration`: "platt" or "temperature") and threshold fitted on the validation
    sources through the product path, from the calibrated probabilities of `predictor` (its spec's
    calibration is undone first). `jpeg_quality`: also fit on each frame re-encoded as JPEG at that
    quality (pooled with the clean frames), so the operating point serves compressed uploads too.
    DFDError when the sources cannot give both classes (moved or deleted files)."""
    from deepfake_detection.evaluate.calibration import calibrated, choose_threshold, fit_calibration

    jpeg_copy = None if jpeg_quality is None else jpeg_perturbation(jpeg_quality)
    scores = score_sources(predictor, val_rows, frames=frames, perturbations=[jpeg_copy] if jpeg_copy else [])
    rows = scores.frames
    if rows.empty or rows["label"].nunique() < 2:
        raise DFDError(f"validation sources gave {len(rows)} scorable frames of "
                       f"{rows['label'].nunique() if len(rows) else 0} class(es)")
    labels, probabilities = rows["label"].to_numpy(), rows["score"].to_numpy(np.float64)
    if jpeg_copy:
        compressed = scores.perturbed[jpeg_copy]
        seen = compressed > 0.0  # 0: the compressed copy hid the face; no frame to fit on
        labels = np.concatenate([labels, labels[seen]])
        probabilities = np.concatenate([probabilities, compressed[seen]])
    logits = raw_logits(probabilities, predictor.spec.temperature, predictor.spec.bias)
    temperature, bias = fit_calibration(logits, labels, calibration)
    threshold = choose_threshold(calibrated(logits, temperature, bias), labels, strategy=strategy,
                                 target_fpr=target_fpr)
    return Fit(temperature, bias, threshold, len(labels))


def jpeg_perturbation(quality: int) -> str:
    """The robustness table's perturbation that re-encodes at `quality` (its name); DFDError when the
    table has none, so calibration pools exactly the copies `dfd evaluate` measures."""
    from deepfake_detection.evaluate.robustness import PERTURBATIONS

    name = f"jpeg{quality}"
    if name not in PERTURBATIONS:
        offered = [k for k in PERTURBATIONS if k.startswith("jpeg")]
        raise DFDError(f"JPEG quality {quality} is not offered; the robustness table has {offered}")
    return name
