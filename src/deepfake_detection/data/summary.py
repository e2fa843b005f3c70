"""The summary of a prepared dataset: counts, face sizes, no-face rate, failures; JSON and PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepfake_detection.io.atomic import atomic_path, write_text_atomic


def _counts(df: pd.DataFrame, *columns: str) -> dict[str, int]:
    if df.empty:
        return {}
    grouped = df.groupby(list(columns), observed=True).size()
    return {"/".join(map(str, k if isinstance(k, tuple) else (k,))): int(v) for k, v in grouped.items()}


def summarise(df: pd.DataFrame, *, failures: list[dict[str, str]], no_face: list[str], sources: int,
              frames: int, duplicates: pd.DataFrame, config: dict[str, Any]) -> dict[str, Any]:
    sides = df["face_side"].to_numpy() if len(df) else np.zeros(0)
    return {
        "sources": sources,
        "frames_sampled": frames,
        "crops": len(df),
        "by_label": _counts(df, "label"),
        "by_method": _counts(df, "method"),
        "by_split": _counts(df, "split"),
        "by_split_label": _counts(df, "split", "label"),
        "by_dataset": _counts(df, "dataset"),
        "groups": int(df["group"].nunique()) if len(df) else 0,
        "face_size_px": {q: float(np.percentile(sides, p)) for q, p in
                         (("p5", 5), ("median", 50), ("p95", 95))} if len(sides) else {},
        "no_face_sources": len(no_face),
        "no_face_rate": round(len(no_face) / max(sources - len(failures), 1), 4),
        "failures": len(failures),
        "failed_files": failures,
        "no_face_files": no_face[:1000],
        "near_duplicates_removed": len(duplicates),
        "config": config,
    }


def _plot(df: pd.DataFrame, summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    split_label = summary["by_split_label"]
    splits = sorted({k.split("/")[0] for k in split_label})
    for offset, label in ((-0.2, "0"), (0.2, "1")):
        axes[0].bar(np.arange(len(splits)) + offset, [split_label.get(f"{s}/{label}", 0) for s in splits],
                    width=0.4, label="real" if label == "0" else "deepfake")
    axes[0].set_xticks(range(len(splits)), splits)
    axes[0].set_title("crops per split")
    axes[0].legend()
    methods = summary["by_method"]
    axes[1].barh(list(methods), list(methods.values()))
    axes[1].set_title("crops per method")
    if len(df):
        axes[2].hist(df["face_side"].to_numpy(), bins=40)
    axes[2].set_title("face size (px, longer box side)")
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=90, format="png")
    finally:
        plt.close(fig)


def write_summary(out: Path, df: pd.DataFrame, **kwargs: Any) -> dict[str, Any]:
    summary = summarise(df, **kwargs)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    if len(kwargs["duplicates"]):
        kwargs["duplicates"].to_csv(out / "duplicates_removed.csv", index=False)
    _plot(df, summary, out / "summary.png")
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    lines = [
        f"sources {summary['sources']}, frames {summary['frames_sampled']}, crops {summary['crops']}, "
        f"groups {summary['groups']}",
        f"labels {summary['by_label']}  splits {summary['by_split']}",
        f"methods {summary['by_method']}",
        f"no face {summary['no_face_sources']} ({summary['no_face_rate']:.1%}), "
        f"failures {summary['failures']}, near-duplicates removed {summary['near_duplicates_removed']}",
    ]
    lines += [f"  failed: {f['path']}: {f['error']}" for f in summary["failed_files"][:20]]
    return "\n".join(lines)
