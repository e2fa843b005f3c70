"""`dfd evaluate` and `dfd compare`: a model file + a manifest (or a folder) -> report; runs -> table.

Evaluation never fits anything on the evaluated data: the threshold and temperature come from the
model's ModelSpec, where training put the values fitted on validation data.

Two modes. `product` (the default) scores the manifest's source files through the product's own path
(evaluate/product_path.py: decode, detect, crop, classify; videos also get `dfd detect`'s video
verdict), so the figures are the ones users get. `crops` scores the stored crops (fast: no decoding
or detection) and says so in its report; it measures the classifier alone.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from deepfake_detection.errors import DFDError
from deepfake_detection.infer.predictor import Predictor

log = logging.getLogger(__name__)

PRODUCT_ROBUSTNESS = ("jpeg50", "blur1", "down0.5")
ROBUSTNESS_DEFAULT = ("jpeg90", "jpeg70", "jpeg50", "jpeg30", "blur1", "blur2", "blur3", "down0.5",
                      "down0.25", "noise")


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DFDError(f"cannot read crop {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def score_manifest(predictor: Predictor, df: pd.DataFrame, root: Path, *, perturbations: Sequence[str] = (),
                   progress: bool = False) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Calibrated probabilities per crop (column `score`), clean and under each perturbation."""
    from tqdm import tqdm

    from deepfake_detection.evaluate.robustness import PERTURBATIONS

    size = predictor.spec.input_size
    scores: list[np.ndarray] = []
    perturbed: dict[str, list[np.ndarray]] = {name: [] for name in perturbations}
    stored = df["crop_path"].tolist()
    bar = tqdm(total=len(stored), unit="crop", desc="evaluate", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(stored), 256):  # bounded memory: 256 crops at a time
        raw = [_read_rgb(root / p) for p in stored[start : start + 256]]
        bar.update(len(raw))
        crops = [cv2.resize(r, (size, size), interpolation=cv2.INTER_AREA) for r in raw]
        scores.append(predictor.probabilities(crops))
        for name in perturbations:  # degrade the stored crop, as a re-encoded upload would be
            degraded = [cv2.resize(PERTURBATIONS[name](r), (size, size), interpolation=cv2.INTER_AREA)
                        for r in raw]
            perturbed[name].append(predictor.probabilities(degraded))
    bar.close()
    scored = df.copy()
    scored["score"] = np.concatenate(scores) if scores else np.zeros(0)
    return scored, {name: np.concatenate(v) for name, v in perturbed.items()}


def _model_info(path: Path, predictor: Predictor) -> dict[str, Any]:
    spec = predictor.spec
    return {**predictor.model_info, "input_size": spec.input_size, "file": str(path),
            "file_size_mb": round(path.stat().st_size / 2**20, 2)}


def evaluate_model(model: str | Path, data: str | Path, out: str | Path, *, split: str | None = "test",
                   robustness: Sequence[str] = ROBUSTNESS_DEFAULT, n_boot: int = 1000,
                   mode: str = "product", frames: int = 16, video_frames: int = 32,
                   progress: bool = False) -> dict[str, Any]:
    """Evaluate a model on a manifest's split (or all rows of a folder) and write the report;
    `progress`: a progress bar on stderr while scoring."""
    if mode not in ("product", "crops"):
        raise DFDError(f"evaluation mode must be 'product' or 'crops', not {mode!r}")
    from deepfake_detection.data.manifest import read_manifest
    from deepfake_detection.evaluate.metrics import summarize
    from deepfake_detection.evaluate.pipeline import evaluate_predictions, make_plots
    from deepfake_detection.evaluate.report import write_report
    from deepfake_detection.evaluate.robustness import robustness_table
    from deepfake_detection.infer.bundled import resolve_model

    # A bundled model's name ("default") is a model too: its file is looked up before any scoring.
    (model_path, _), data_path, out_dir = resolve_model(model), Path(data), Path(out)
    predictor = Predictor.load(model, batch_size=64)
    if data_path.is_dir():
        df, root = _folder_frame(data_path, predictor, progress=progress), None
    else:
        df, root = read_manifest(data_path), data_path.parent
        if split:
            df = df[df["split"] == split].reset_index(drop=True)
    if df.empty or df["label"].nunique() < 2:
        raise DFDError(f"{data_path}: the evaluated set needs both real and fake samples "
                       f"(split={split!r}: {len(df)} rows)")
    perturbed: dict[str, np.ndarray] = {}
    path_scores = None
    if root is not None and mode == "crops":
        df, perturbed = score_manifest(predictor, df, root, perturbations=robustness, progress=progress)
    elif root is not None:
        path_scores = _score_product_path(predictor, df, data_path, robustness=robustness, frames=frames,
                                          video_frames=video_frames, progress=progress)
        df, perturbed = path_scores.frames, path_scores.perturbed
        if df.empty or df["label"].nunique() < 2:
            raise DFDError(f"{data_path}: fewer than two classes with a detected face in split {split!r}")
    spec = predictor.spec
    cluster = "group" if path_scores is not None else "source_id"
    results = evaluate_predictions(df, threshold=spec.threshold, temperature=spec.temperature,
                                   bias=spec.bias,
                                   model=_model_info(model_path, predictor), n_boot=n_boot,
                                   cluster_col=cluster)
    results["data"] = {"source": str(data_path), "split": split, "n_frames": len(df),
                       "n_sources": int(df["source_id"].nunique()),  # images and videos scored
                       "mode": "product path (decode, detect, crop, classify)" if mode == "product"
                       else "stored crops (classifier only; not the product's path)"}
    if path_scores is not None:
        _add_product_videos(results, path_scores, spec.threshold, n_boot)
    if perturbed:
        labels = df["label"].to_numpy()
        results["robustness"] = robustness_table(labels, df["score"].to_numpy(), perturbed)
        for name, scores in perturbed.items():  # the full metric set too, at the model's threshold
            entry = results["robustness"]["perturbations"][name]
            entry["metrics"] = summarize(labels, scores, spec.threshold)
    out_dir.mkdir(parents=True, exist_ok=True)
    results["plots"] = {k: str(v) for k, v in make_plots(df, results, out_dir).items()}
    table = df.drop(columns=[c for c in ("box", "landmarks", "landmarks68") if c in df.columns])
    for name, scores in perturbed.items():  # per-frame degraded scores, for breakdowns by dataset
        table[f"score_{name}"] = scores
    table.to_csv(out_dir / "scores.csv", index=False)
    if path_scores is not None:
        path_scores.videos.to_csv(out_dir / "videos.csv", index=False)
    write_report(results, out_dir, title=f"Evaluation of {results['model']['name']}")
    return results


def _score_product_path(predictor: Predictor, df: pd.DataFrame, manifest: Path, *,
                        robustness: Sequence[str], frames: int, video_frames: int, progress: bool) -> Any:
    from tqdm import tqdm

    from deepfake_detection.data.prepare import source_padding
    from deepfake_detection.evaluate.product_path import score_sources

    bar = tqdm(total=int(df["source_id"].nunique()), unit="src", desc="evaluate", disable=not progress)

    def advance(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        return score_sources(predictor, df, pad=source_padding(manifest), frames=frames,
                             video_frames=video_frames, perturbations=robustness, progress=advance)
    finally:
        bar.close()


def _add_product_videos(results: dict[str, Any], scores: Any, threshold: float, n_boot: int) -> None:
    """Video level = `dfd detect`'s verdict per video (not a mean of frames), and what had no face."""
    from deepfake_detection.evaluate.metrics import breakdown
    from deepfake_detection.evaluate.pipeline import evaluate_level

    videos = scores.videos
    results["video"] = None
    if len(videos) and videos["label"].nunique() == 2:
        results["video"] = evaluate_level(videos["label"], videos["score"], threshold, n_boot=n_boot,
                                          groups=videos["group"].to_numpy(), cluster_name="group")
        for col, key in (("method", "per_method"), ("dataset", "per_dataset")):
            results[key]["video"] = breakdown(videos, col, score_col="score", threshold=threshold,
                                              group_col=None)
    results["data"]["n_video_verdicts"] = len(videos)
    results["data"]["no_face_sources"] = len(scores.no_face)
    results["data"]["unreadable_sources"] = scores.errors


def _folder_frame(folder: Path, predictor: Predictor, *, progress: bool = False) -> pd.DataFrame:
    """Score the images of a real/ + fake/ folder with the full pipeline (detect, crop, classify)."""
    from tqdm import tqdm

    from deepfake_detection.data.layouts import iter_sources

    items = [s for s in iter_sources([folder]) if s.kind == "image"]
    rows = []
    results = tqdm(predictor.predict_many([s.path for s in items]), total=len(items), unit="img",
                   desc="evaluate", disable=not progress, dynamic_ncols=True)
    for item, result in zip(items, results, strict=True):
        if result.fake_probability is None:
            continue  # no face or unreadable: counted by `dfd detect`, not scorable here
        rows.append({"source_id": item.source_id, "label": item.label, "method": item.method,
                     "dataset": item.dataset, "group": item.group, "score": result.fake_probability})
    return pd.DataFrame(rows)


def measure_latency(model: str | Path, *, repeats: int = 30) -> dict[str, float]:
    """ONNX Runtime CPU latency: batch 1 (median ms) and batch 32 (median ms per batch, images/s)."""
    from deepfake_detection.infer.backends import OnnxBackend
    from deepfake_detection.models.paths import onnx_for

    backend = OnnxBackend(onnx_for(Path(model)))
    size = backend.spec.input_size
    rng = np.random.default_rng(0)
    figures = {}
    for batch, runs in ((1, repeats), (32, max(3, repeats // 10))):
        x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
        for _ in range(3):
            backend.logits(x)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            backend.logits(x)
            times.append((time.perf_counter() - start) * 1000)
        figures[f"latency_ms_b{batch}"] = float(np.median(times))
    figures["throughput_ips"] = 32 / (figures["latency_ms_b32"] / 1000)
    return figures


def compare_runs(runs: Sequence[str | Path], out: str | Path, *,
                 latency: bool = True) -> list[dict[str, Any]]:
    """One table across evaluation folders (each with metrics.json written by `dfd evaluate`)."""
    from deepfake_detection.evaluate.report import write_comparison
    from deepfake_detection.models.registry import create_model

    rows = []
    for run in runs:
        metrics_path = Path(run) / "metrics.json"
        if not metrics_path.exists():
            raise DFDError(f"{run}: no metrics.json (run `dfd evaluate ... --out {run}` first)")
        results = json.loads(metrics_path.read_text())
        model = results["model"]
        frame = results["frame"]["at_threshold"]
        robust = results.get("robustness") or {}
        row: dict[str, Any] = {
            "name": model["name"], "arch": model["arch"], "file_size_mb": model.get("file_size_mb"),
            "params": sum(p.numel() for p in create_model(model["arch"]).parameters()),
            "auc": frame.get("auc"), "f1": frame.get("f1"), "eer": frame.get("eer"),
            "video_auc": (results.get("video") or {}).get("at_threshold", {}).get("auc"),
            "robustness_mean_auc_drop": robust.get("mean_auc_drop"),
        }
        if latency and model.get("file") and os.path.exists(model["file"]):
            row.update(measure_latency(model["file"]))
        rows.append(row)
    write_comparison(rows, out)
    return rows
