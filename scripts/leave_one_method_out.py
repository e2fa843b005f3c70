"""Leave-one-method-out (LOMO): how a training recipe does on a manipulation method it never saw.

For each method M (default: Deepfakes, Face2Face, FaceSwap):
  1. training manifests = the given ones without M's fakes in train and val (reals, the other methods,
     GAN faces and self-blended pseudo-fakes stay; the validation AUC that picks the checkpoint and the
     threshold never sees M);
  2. `dfd train` with the given config (the default model's recipe unless told otherwise);
  3. `dfd evaluate` on the held-out identity groups (val + test splits of the first manifest): the AUC
     of M's fakes against all held-out reals, with its bootstrap interval.
Re-running the same command resumes: finished trainings and evaluations are skipped, an interrupted
training continues from its last checkpoint.

    .venv/bin/python scripts/leave_one_method_out.py work/prep/manifest.parquet \
        work/prepaaf/manifest.parquet \
        --work work/lomo --config configs/default.yaml
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from deepfake_detection.data.manifest import write_manifest
from deepfake_detection.train.data import load_manifests

METHODS = ("Deepfakes", "Face2Face", "FaceSwap")


def _without_method(manifest: Path, method: str, out: Path) -> Path:
    df = load_manifests([manifest])  # crop paths made absolute: the copy lives elsewhere
    keep = ~((df["method"] == method) & (df["label"] == 1) & df["split"].isin(["train", "val"]))
    write_manifest(df[keep].reset_index(drop=True), out)
    return out


def _held_out(manifest: Path, out: Path) -> Path:
    df = load_manifests([manifest])  # crop paths made absolute: the copy lives elsewhere
    held = df[df["split"].isin(["val", "test"])].copy()
    held["split"] = "test"
    write_manifest(held.reset_index(drop=True), out)
    return out


def run(manifests: list[Path], work: Path, config: Path, methods: list[str], overrides: list[str],
        dfd: str) -> dict[str, dict[str, float]]:
    work.mkdir(parents=True, exist_ok=True)
    held = _held_out(manifests[0], work / "held_out.parquet")
    results: dict[str, dict[str, float]] = {}
    for method in methods:
        folder = work / method
        folder.mkdir(exist_ok=True)
        train_manifests = [_without_method(m, method, folder / f"train_{i}.parquet")
                           for i, m in enumerate(manifests)]
        run_dir = folder / "run"
        if not (run_dir / "model.onnx").is_file():
            resume = ["--resume"] if (run_dir / "last.ckpt").is_file() else []
            listing = ", ".join(str(p) for p in train_manifests)
            subprocess.run([dfd, "train", "--config", str(config), *resume, "--set",
                            f"data.manifests=[{listing}]", f"out={run_dir}", *overrides], check=True)
        eval_dir = folder / "eval"
        if not (eval_dir / "metrics.json").is_file():
            subprocess.run([dfd, "evaluate", str(run_dir / "model.onnx"), str(held), "--split", "test",
                            "--out", str(eval_dir), "--no-robustness", "--bootstrap", "1000"], check=True)
        metrics = json.loads((eval_dir / "metrics.json").read_text())
        m = metrics["per_method"]["frame"][method]
        results[method] = {"auc": m["auc"], "auc_lo": m["auc_ci"][0], "auc_hi": m["auc_ci"][1],
                           "recall_at_threshold": m["recall"], "fpr_at_threshold": m["fpr"],
                           "n_fake": m["n_fake"], "n_real": m["n_real"]}
    aucs = [r["auc"] for r in results.values()]
    results["mean"] = {"auc": float(np.mean(aucs))}
    return results


def _table(results: dict[str, dict[str, float]]) -> str:
    lines = ["| held-out method | AUC [95% CI] | recall / FPR at the run's threshold | fakes / reals |",
             "| --- | --- | --- | --- |"]
    for method, r in results.items():
        if method == "mean":
            continue
        lines.append(f"| {method} | {r['auc']:.3f} [{r['auc_lo']:.3f}, {r['auc_hi']:.3f}] | "
                     f"{r['recall_at_threshold']:.0%} / {r['fpr_at_threshold']:.0%} | "
                     f"{r['n_fake']:.0f} / {r['n_real']:.0f} |")
    lines.append(f"| **mean** | **{results['mean']['auc']:.3f}** | | |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("manifests", nargs="+", type=Path, help="`dfd prepare` manifests; the first "
                        "one's val+test groups are the evaluation data")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=Path("configs/default.yaml"))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", help="extra `dfd train --set`s")
    parser.add_argument("--dfd", default=str(Path(sys.executable).with_name("dfd")))
    args = parser.parse_args()
    results = run(args.manifests, args.work, args.config, args.methods, args.overrides, args.dfd)
    (args.work / "lomo.json").write_text(json.dumps(results, indent=2))
    table = _table(results)
    (args.work / "lomo.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
