"""Average model files into one ("model soup"), scored on a run's validation crops.

    .venv/bin/python scripts/average_weights.py A.safetensors B.safetensors C.safetensors \
        --config work/folds/stage1_cont6_fold4/config.yaml --out work/soups/abc [--greedy | --weights W ...]

Every input and the mean are scored on the validation split of `--config`'s manifests with the
numbers `dfd train` picks checkpoints by (pooled and within-source AUC). `--greedy` (Wortsman et al.
2022): take the inputs best first and keep each one only if the running mean's within-source AUC does
not drop. `--weights` mixes the inputs with the given weights (divided by their sum) instead of
uniformly: WiSE-FT's mixing coefficient between a start and its fine-tuned copy (a weight below 0
extrapolates along the line between two files). `--out` becomes a run-like folder: model.safetensors
(the mean, its calibration reset: run `dfd calibrate` on it before use), summary.json (the inputs,
the weights and every validation figure) and config.yaml (the validation config, as
`scripts/ship_model.py` expects). Test splits are never read.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from deepfake_detection.errors import DFDError
from deepfake_detection.io.atomic import write_text_atomic
from deepfake_detection.models.files import save_model
from deepfake_detection.models.soup import average_model_files, common_spec, mixing_weights
from deepfake_detection.train.validation import score_model_file


def _mean_score(paths: list[Path], config: Path, scratch: Path) -> dict[str, float]:
    model, spec = average_model_files(paths)
    save_model(model, spec, scratch)
    return score_model_file(scratch, config)


def main() -> int:
    try:
        return run()
    except DFDError as exc:  # unreadable or mismatched model files, a bad config: say which, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="model files (.safetensors) of one network")
    parser.add_argument("--config", type=Path, required=True,
                        help="a run's config.yaml: its validation split scores every model")
    parser.add_argument("--out", type=Path, required=True, help="folder for the averaged model")
    parser.add_argument("--greedy", action="store_true", help="keep an input only if it does not lower "
                        "the mean's within-source validation AUC")
    parser.add_argument("--weights", type=float, nargs="+", help="one mixing weight per model file "
                        "(divided by their sum; default: uniform)")
    args = parser.parse_args()
    if args.greedy and args.weights:
        parser.error("--greedy keeps a uniform mean of the inputs it keeps: give --weights or --greedy")
    common_spec(args.models)  # refuse mismatched files before minutes of scoring
    mixing_weights(len(args.models), args.weights)  # refuse bad weights before minutes of scoring too
    scores = {p: score_model_file(p, args.config) for p in args.models}
    for path, s in scores.items():
        print(json.dumps({"model": str(path), **s}), flush=True)
    chosen = list(args.models)  # in the given order, which `--weights` follows
    result: dict[str, float] | None = None  # the kept mean's scores, when greedy already measured them
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "mean.safetensors"
        if args.greedy:
            chosen.sort(key=lambda p: -scores[p]["val_auc_within"])
            kept, best = chosen[:1], scores[chosen[0]]
            for path in chosen[1:]:
                trial = _mean_score([*kept, path], args.config, scratch)
                print(json.dumps({"trial": [str(p) for p in [*kept, path]], **trial}), flush=True)
                if trial["val_auc_within"] >= best["val_auc_within"]:
                    kept, best, result = [*kept, path], trial, trial
            chosen = kept
        if len(chosen) < 2:
            kept_alone = {"result": "no mean kept: the best single model stays", "model": str(chosen[0])}
            print(json.dumps(kept_alone), flush=True)
            return 1
        # --weights excludes --greedy, so `chosen` is then the inputs in their given order
        model, spec = average_model_files(chosen, name=args.out.name, weights=args.weights)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = save_model(model, spec, args.out / "model.safetensors")
    result = result or score_model_file(weights, args.config)  # the same weights: no second scoring
    print(json.dumps({"mean_of": [str(p) for p in chosen], "out": str(weights), **result}), flush=True)
    summary = {"mean_of": [str(p) for p in chosen], "greedy": args.greedy,
               "weights": mixing_weights(len(chosen), args.weights), **result,
               "select_metric": "within_source_auc", "inputs": {str(p): scores[p] for p in args.models},
               "arch": spec.arch, "input_size": spec.input_size, "crop_protocol": asdict(spec.crop)}
    write_text_atomic(args.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_text_atomic(args.out / "config.yaml", args.config.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
