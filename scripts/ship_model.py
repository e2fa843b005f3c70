"""Copy a trained run into the bundled default model (src/deepfake_detection/bundled/default.*).

The run's best weights keep their spec (crop protocol, temperature, bias and threshold fitted on the
validation split through the product path) and get the release name; the ONNX file is exported
again from them (ONNX Runtime parity checked), the sha256 sidecars are written, and the run's
training config and summary are copied beside them. The evaluation figures go into the model card
by hand, with the commands that reproduce them.

    .venv/bin/python scripts/ship_model.py work/v2_fold0 --name dfd-default-v2 --evaluation work/eval_v2_fold0

`--calibrated DIR` ships a `dfd calibrate` refit of the run's weights (e.g. with mirror TTA) instead.

The model files the run started from or averaged (the config's `model.pretrained`, the summary's
`mean_of`) are named by path, and one of them is often the bundled file this script overwrites: their
sha256, taken before anything is written, go into default.metrics.json as `ancestors`, so the
record still says which weights they were.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from deepfake_detection.export.onnx import check_parity, export_onnx
from deepfake_detection.infer.bundled import BUNDLED_DIR
from deepfake_detection.models.files import load_model_file, save_model
from deepfake_detection.models.paths import sha256_file, write_checksum


def ancestor_hashes(run: Path, summary: dict[str, Any]) -> dict[str, str]:
    """{path: sha256, or "missing"} of the model files `run` (its config and `summary`) names as its
    start or its ingredients."""
    import yaml

    config = yaml.safe_load((run / "config.yaml").read_text()) or {}
    pretrained = (config.get("model") or {}).get("pretrained")
    named = [pretrained] if isinstance(pretrained, str) else []
    named += [str(p) for p in summary.get("mean_of") or []]
    files = [p for p in dict.fromkeys(named) if Path(p).suffix in (".safetensors", ".onnx")]
    return {p: sha256_file(p) if Path(p).is_file() else "missing" for p in files}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a `dfd train` output folder (model.safetensors, ...)")
    parser.add_argument("--name", required=True, help="release name stored in the spec")
    parser.add_argument("--evaluation", type=Path, required=True,
                        help="the `dfd evaluate` folder of the run's model on its held-out test split")
    parser.add_argument("--calibrated", type=Path,
                        help="a `dfd calibrate --out` folder of the run's weights: ship its calibration")
    parser.add_argument("--out", type=Path, default=BUNDLED_DIR)
    args = parser.parse_args()
    summary = json.loads((args.run / "summary.json").read_text())
    ancestors = ancestor_hashes(args.run, summary)  # before the bundled file, often one of them, is replaced
    model, spec = load_model_file((args.calibrated or args.run) / "model.safetensors")
    spec = replace(spec, name=args.name)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = save_model(model.eval(), spec, args.out / "default.safetensors")
    onnx_path = export_onnx(model, spec, args.out / "default.onnx")
    parity = check_parity(model, onnx_path)
    for path in (weights, onnx_path):
        write_checksum(path)
    shutil.copyfile(args.run / "config.yaml", args.out / "default.train_config.yaml")
    summary.update({"name": args.name, "onnx_parity_max_abs": parity, "ancestors": ancestors})
    if args.calibrated:  # the run's own fit is replaced by `dfd calibrate`'s
        fit = json.loads((args.calibrated / "calibration.json").read_text())
        summary.update({"temperature": spec.temperature, "bias": spec.bias, "threshold": spec.threshold,
                        "tta_hflip": spec.tta_hflip, "recalibration": fit,
                        "calibrated_on": f"product path ({fit['frames']} {fit['split']} frames, "
                                         "dfd calibrate)"})
    evaluation = json.loads((args.evaluation / "metrics.json").read_text())
    if abs(evaluation["threshold"] - spec.threshold) > 1e-9:
        raise SystemExit(f"{args.evaluation} evaluated another model (threshold {evaluation['threshold']})")
    metrics = {"training": summary, "test_evaluation": evaluation}
    (args.out / "default.metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"{args.name}: {onnx_path} ({onnx_path.stat().st_size / 2**20:.1f} MiB), "
          f"{weights} ({weights.stat().st_size / 2**20:.1f} MiB), threshold {spec.threshold:.4f}, "
          f"T {spec.temperature:.3f}, bias {spec.bias:.3f}, crop {spec.crop}, parity {parity:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
