"""Evaluation reports (metrics.json, report.md, report.html) and cross-model comparisons.

The ``results`` dict (``pipeline.evaluate_predictions`` builds all but ``robustness`` and ``plots``)::

    {
      "model": {"name": str, "arch": str, "params": int, "file_size_mb": float, "sha256": str, ...},
      "threshold": float,            # chosen on validation data (calibration.choose_threshold)
      "threshold_strategy": str,     # optional, e.g. "youden on val"
      "temperature": float,          # calibration.fit_calibration on validation data ...
      "bias": float,                 # ... probability = sigmoid(logit / temperature + bias)
      "data": {str: scalar},         # optional: manifest, split, n_frames, n_sources, n_video_verdicts, ...
      "frame": Level,                # every crop a sample
      "video": Level | None,         # mean of frame scores per source_id (DeepfakeBench video AUC)
      "per_method": {"frame": {method: Entry}, "video": {method: Entry}},
      "per_dataset": {"frame": {dataset: Entry}, "video": {dataset: Entry}},
      "robustness": robustness.robustness_table(...) | None,
                     # {"clean_auc", "mean_auc_drop", "perturbations": {name: {"auc", "auc_drop"}}}
      "plots": {name: path},         # PNGs, embedded relative to out_dir
      "notes": [str],                # optional free text
    }
    Level = {"at_threshold": summarize(...), "at_0.5": summarize(..., 0.5),
             "auc_ci": [low, high] | None, "ci_method": str | None}
    Entry = metrics.breakdown(...) value: summarize(...) + "real_pool" (+ "auc_ci")

Missing optional keys are skipped. Every text cell is escaped (Markdown and HTML), so names taken from
data cannot inject markup. NaN and infinities become null in the JSON.

A comparison ``run`` dict (one per model, for ``compare_table`` / ``write_comparison``)::

    {"name": str, "params": int, "file_size_mb": float, "auc": float, "video_auc": float (optional),
     "f1": float, "eer": float, "robustness_mean_auc_drop": float, "latency_ms_b1": float,
     "latency_ms_b32": float (per batch of 32), "throughput_ips": float (images/s)}

Any may be None; the table shows "-".
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepfake_detection.evaluate.plots import plot_auc_vs_latency
from deepfake_detection.io.atomic import write_text_atomic

__all__ = ["compare_table", "to_jsonable", "write_comparison", "write_report"]

# A document is a list of blocks, rendered once to Markdown and once to HTML so both say the same.
Block = tuple[Any, ...]
DASH = "-"


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: NaN/inf -> None, NumPy scalars and arrays -> Python, Path -> str."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def _write_atomic(path: Path, text: str) -> Path:
    return write_text_atomic(path, text, newline="\n")


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return DASH
    if isinstance(x, bool | str):
        return str(x)
    if isinstance(x, int | np.integer):
        return str(int(x))
    if isinstance(x, float | np.floating):
        return f"{float(x):.{digits}f}"
    return str(x)


def _auc_ci(entry: Mapping[str, Any] | None, ci: Sequence[float] | None = None) -> str:
    if not entry or entry.get("auc") is None:
        return DASH
    ci = ci if ci is not None else entry.get("auc_ci")
    return _fmt(entry["auc"]) + (f" [{_fmt(ci[0], 3)}, {_fmt(ci[1], 3)}]" if ci else "")


OVERALL_COLS = ["level", "threshold", "n (real/fake)", "AUC [95% CI]", "AP", "EER", "ACC", "balanced ACC",
                "precision", "recall (TPR)", "FPR", "F1", "log-loss", "ECE"]


def _overall_rows(results: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for level in ("frame", "video"):
        data = results.get(level)
        if not data:
            continue
        for key in ("at_threshold", "at_0.5"):
            m = data.get(key)
            if not m:
                continue
            rows.append([level, _fmt(m["threshold"], 3), f"{m['n']} ({m['n_real']}/{m['n_fake']})",
                         _auc_ci(m, data.get("auc_ci")), _fmt(m["ap"]), _fmt(m["eer"]), _fmt(m["accuracy"]),
                         _fmt(m["balanced_accuracy"]), _fmt(m["precision"]), _fmt(m["recall"]),
                         _fmt(m["fpr"]), _fmt(m["f1"]), _fmt(m["log_loss"]), _fmt(m["ece"])])
    return rows


def _breakdown_block(name: str, per: Mapping[str, Any]) -> list[Block]:
    frame, video = per.get("frame") or {}, per.get("video") or {}
    if not frame and not video:
        return []
    cols = [name, "real pool", "n real", "n fake", "frame AUC [95% CI]", "frame AP", "frame EER",
            "ACC", "recall (TPR)", "FPR", "video AUC", "video ACC"]
    rows = []
    for value in sorted(set(frame) | set(video)):
        f, v = frame.get(value) or {}, video.get(value) or {}
        base = f or v
        rows.append([value, str(base.get("real_pool", DASH)), _fmt(base.get("n_real")),
                     _fmt(base.get("n_fake")), _auc_ci(f), _fmt(f.get("ap")), _fmt(f.get("eer")),
                     _fmt(f.get("accuracy")), _fmt(f.get("recall")), _fmt(f.get("fpr")),
                     _fmt(v.get("auc")), _fmt(v.get("accuracy"))])
    return [("h", 2, f"Per {name}"), ("table", cols, rows)]


def _robustness_block(rob: Mapping[str, Any] | None) -> list[Block]:
    if not rob:
        return []
    rows = [["clean", _fmt(rob.get("clean_auc")), _fmt(0.0)]]
    for name, r in (rob.get("perturbations") or {}).items():
        rows.append([name, _fmt(r.get("auc")), _fmt(r.get("auc_drop"))])
    if rob.get("mean_auc_drop") is not None:
        rows.append(["mean drop", DASH, _fmt(rob["mean_auc_drop"])])
    return [("h", 2, "Robustness"),
            ("p", "Frame-level AUC on perturbed inputs; drop = clean AUC - perturbed AUC "
                  "(positive is worse)."),
            ("table", ["perturbation", "AUC", "drop vs clean"], rows)]


def _kv_table(mapping: Mapping[str, Any]) -> Block:
    return ("table", ["key", "value"], [[str(k), _fmt(v)] for k, v in mapping.items()
                                        if not isinstance(v, Mapping | list)])


def _document(results: Mapping[str, Any], out_dir: Path, title: str) -> list[Block]:
    blocks: list[Block] = [("h", 1, title), ("h", 2, "Model")]
    info = dict(results.get("model") or {})
    info["threshold"] = results.get("threshold")
    if results.get("threshold_strategy"):
        info["threshold_strategy"] = results["threshold_strategy"]
    info["temperature"] = results.get("temperature")
    info["bias"] = results.get("bias", 0.0)
    blocks.append(_kv_table(info))
    if results.get("data"):
        blocks += [("h", 2, "Data"), _kv_table(results["data"])]
    ci_method = (results.get("frame") or {}).get("ci_method") or "cluster bootstrap over source videos"
    blocks += [("h", 2, "Overall"),
               ("p", "Fake is the positive class. Video scores are the mean of the frame scores of each "
                     "source (DeepfakeBench's video AUC). Frame-level AUC intervals, overall, per method "
                     f"and per dataset: {ci_method} (frames of one video or person are not independent)."),
               ("table", OVERALL_COLS, _overall_rows(results))]
    blocks += _breakdown_block("method", results.get("per_method") or {})
    blocks += _breakdown_block("dataset", results.get("per_dataset") or {})
    if results.get("per_method"):
        blocks.append(("p", "Real pool 'all': the fakes of that value against all reals of the test "
                            "set (the DeepfakeBench per-manipulation convention); 'own': only the rows "
                            "of that value."))
    blocks += _robustness_block(results.get("robustness"))
    if results.get("plots"):
        blocks.append(("h", 2, "Figures"))
        for name, path in results["plots"].items():
            rel = Path(os.path.relpath(Path(path).resolve(), out_dir.resolve())).as_posix()
            blocks.append(("img", str(name), rel))
    notes = list(results.get("notes") or [])
    notes.append("Threshold, temperature and bias were chosen on validation data, not on this test set.")
    blocks += [("h", 2, "Notes"), ("ul", notes)]
    return blocks


def _md_text(text: str) -> str:
    # Escape HTML too: Markdown renderers pass raw HTML through.
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def _to_markdown(blocks: list[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            lines += ["#" * block[1] + " " + _md_text(block[2]), ""]
        elif kind == "p":
            lines += [_md_text(block[1]), ""]
        elif kind == "ul":
            lines += [f"- {_md_text(item)}" for item in block[1]] + [""]
        elif kind == "img":
            lines += [f"![{_md_text(block[1])}]({block[2].replace(' ', '%20')})", ""]
        elif kind == "table":
            headers, rows = block[1], block[2]
            lines.append("| " + " | ".join(_md_text(h) for h in headers) + " |")
            lines.append("|" + "|".join(" --- " for _ in headers) + "|")
            lines += ["| " + " | ".join(_md_text(c) for c in row) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines)


CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
       "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
       "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
       "td:first-child,th:first-child{text-align:left}img{max-width:48%;margin:4px}")


def _to_html(blocks: list[Block], title: str) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
             f"<style>{CSS}</style></head><body>"]
    for block in blocks:
        kind = block[0]
        if kind == "h":
            parts.append(f"<h{block[1]}>{e(str(block[2]))}</h{block[1]}>")
        elif kind == "p":
            parts.append(f"<p>{e(str(block[1]))}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{e(str(i))}</li>" for i in block[1]) + "</ul>")
        elif kind == "img":
            parts.append(f'<figure><img src="{e(block[2])}" alt="{e(block[1])}">'
                         f"<figcaption>{e(block[1])}</figcaption></figure>")
        elif kind == "table":
            head = "".join(f"<th>{e(str(h))}</th>" for h in block[1])
            body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>"
                           for row in block[2])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(results: Mapping[str, Any], out_dir: str | Path, *, title: str = "Evaluation report"
                 ) -> dict[str, Path]:
    """Write metrics.json, report.md and report.html into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    blocks = _document(results, out, title)
    data = to_jsonable(results)
    return {
        "json": _write_atomic(out / "metrics.json",
                              json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False) + "\n"),
        "md": _write_atomic(out / "report.md", _to_markdown(blocks)),
        "html": _write_atomic(out / "report.html", _to_html(blocks, title)),
    }


COMPARE_COLS = [("name", "model", 0), ("params", "params (M)", 2), ("file_size_mb", "file MB", 1),
                ("auc", "AUC", 4), ("video_auc", "video AUC", 4), ("f1", "F1", 4), ("eer", "EER", 4),
                ("robustness_mean_auc_drop", "mean AUC drop (robustness)", 4),
                ("latency_ms_b1", "latency ms (batch 1)", 2), ("latency_ms_b32", "latency ms (batch 32)", 1),
                ("throughput_ips", "throughput (img/s)", 1)]


def _compare_rows(runs: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for run in runs:
        row = []
        for key, _, digits in COMPARE_COLS:
            value = run.get(key)
            if key == "params" and value is not None:
                value = float(value) / 1e6
            row.append(_fmt(value, digits) if key != "name" else str(value if value is not None else DASH))
        rows.append(row)
    return rows


def compare_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table across models, one row per run dict (keys in the module docstring)."""
    return _to_markdown([("table", [c[1] for c in COMPARE_COLS], _compare_rows(runs))])


def write_comparison(runs: Sequence[Mapping[str, Any]], out_dir: str | Path, *,
                     title: str = "Model comparison") -> dict[str, Path]:
    """comparison.md, comparison.json and comparison.png (AUC against batch-1 latency)."""
    out = Path(out_dir)
    png = plot_auc_vs_latency(runs, out / "comparison.png")
    md = f"# {_md_text(title)}\n\n{compare_table(runs)}\n![AUC vs latency]({png.name})\n"
    return {
        "md": _write_atomic(out / "comparison.md", md),
        "json": _write_atomic(out / "comparison.json",
                              json.dumps(to_jsonable(list(runs)), indent=2, allow_nan=False) + "\n"),
        "png": png,
    }
