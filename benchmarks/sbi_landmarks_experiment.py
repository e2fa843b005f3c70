"""Does a self-blending mask from 5 landmarks train as well as one from dlib's 68? (data issue)

Trains EfficientNet-Lite0 twice with the same recipe and seed on REAL faces only (self-blended
pseudo-fakes are the only fakes it sees), once with masks built from RetinaFace's 5 points and once
from the 68-point outline, then evaluates both on the held-out FaceForensics++ groups, whose
Deepfakes / Face2Face / FaceSwap fakes neither model has seen.

    .venv/bin/dfd prepare ../shared/data/ffpp_c23 --out work/ff68 --frames 16 --landmarks68 \\
        --ratios 0.6 0.2 0.2
    .venv/bin/dfd prepare AAF_ROOT --out work/aaf68 --landmarks68     # AAF_ROOT/real/*.jpg
    .venv/bin/python benchmarks/sbi_landmarks_experiment.py work/ff68/manifest.parquet \\
        --extra work/aaf68/manifest.parquet --work work/sbi_exp
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deepfake_detection.data.manifest import read_manifest, write_manifest


def _variant(manifest: Path, five_points: bool) -> Path:
    """The manifest itself (68 points) or a sibling copy without `landmarks68` (crop paths stay
    relative to the same folder)."""
    if not five_points:
        return manifest
    df = read_manifest(manifest)
    df["landmarks68"] = None
    return write_manifest(df, manifest.with_name(manifest.stem + "_5pt.parquet"))


def main() -> None:
    from deepfake_detection.evaluate.run import evaluate_model
    from deepfake_detection.train import load_config, train

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ffpp_manifest", type=Path)
    parser.add_argument("--extra", type=Path, nargs="*", default=[], help="more real-face manifests")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    rows = {}
    for name, five in (("5 points", True), ("68 points", False)):
        manifests = [_variant(m, five) for m in (args.ffpp_manifest, *args.extra)]
        tag = "pts5" if five else "pts68"
        config = load_config("configs/compare.yaml", [
            f"data.manifests=[{', '.join(str(m) for m in manifests)}]", "data.use_fakes=false",
            "data.sbi_ratio=0.5", "data.class_balance=false", "data.max_train_samples=null",
            "model.arch=efficientnet_lite0", "model.pretrained=true", f"epochs={args.epochs}",
            f"out={args.work / tag}",
        ])
        run = train(config, resume=(args.work / tag / "last.ckpt").exists())
        results = evaluate_model(run / "model.onnx", args.ffpp_manifest, args.work / f"eval_{tag}",
                                 split="test", robustness=(), n_boot=1000)
        frame, video = results["frame"], results["video"]
        rows[name] = {"frame_auc": frame["at_threshold"]["auc"], "frame_auc_ci": frame["auc_ci"],
                      "video_auc": video["at_threshold"]["auc"] if video else None,
                      "per_method": {m: e.get("auc") for m, e in results["per_method"]["frame"].items()}}
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
