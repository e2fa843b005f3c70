"""Where along the product path does JPEG hurt? A diagnosis on one split's still-image sources.

    .venv/bin/python scripts/diagnose_jpeg_path.py MODEL.onnx work/corpus/manifest_fold4.parquet \
        [--split val] [--dataset ffpp_crops] [--quality 50]

Faces are detected once on the clean source (so box jitter is not part of the comparison), then the
same faces are cropped in several ways, with and without JPEG at `--quality`, and scored by MODEL:
"direct" is the product path (`crop_face` straight to the input size, as `dfd detect` does);
"stored" crops at the manifest's crop size (256 px from `dfd prepare`) and shrinks with INTER_AREA,
as training's stored crops are; the JPEG may hit the source, the stored-size crop (as training's
augmentation does) or the model-sized crop. Prints
the AUC of each variant. Diagnosis only: the product's figures come from `dfd evaluate`.
Use the validation split: test splits are for the one look at a candidate.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import numpy as np
from evaluate_stored_crops import stored_size_crop  # scripts/ beside this file: the one stored-crop recipe

from deepfake_detection.data.manifest import read_manifest
from deepfake_detection.evaluate.metrics import roc_auc
from deepfake_detection.evaluate.robustness import jpeg
from deepfake_detection.faces import Face, crop_faces
from deepfake_detection.infer.predictor import Predictor
from deepfake_detection.io.images import IMAGE_EXTENSIONS, load_image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("manifest")
    parser.add_argument("--split", default="val", help="train, val, test or all")
    parser.add_argument("--dataset", default="ffpp_crops", help="still-image dataset of the manifest")
    parser.add_argument("--quality", type=int, default=50)
    args = parser.parse_args()
    predictor = Predictor.load(args.model)
    size, protocol, q = predictor.spec.input_size, predictor.spec.crop, args.quality
    df = read_manifest(args.manifest)
    df = df[((df.split == args.split) | (args.split == "all")) & (df.dataset == args.dataset)]
    df = df[df.source_path.str.lower().str.endswith(tuple(IMAGE_EXTENSIONS))].drop_duplicates("source_path")
    if df.empty:
        print(f"error: no still-image {args.dataset} sources in split {args.split!r} of {args.manifest}",
              file=sys.stderr)
        return 2
    stored = int(df.crop_size.iloc[0])
    images = [load_image(p) for p in df.source_path]
    faces = [predictor.detect_faces(img)[:1] for img in images]
    keep = [i for i, f in enumerate(faces) if f]
    labels = df.label.to_numpy()[keep]

    def direct(img: np.ndarray, face: list[Face]) -> np.ndarray:
        return crop_faces(img, face, size, protocol)[0]

    def via_stored(img: np.ndarray, face: list[Face],
                   degrade: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        return stored_size_crop(img, face[0], size, protocol, stored, degrade)

    variants: dict[str, Callable[[np.ndarray, list[Face]], np.ndarray]] = {
        "direct, clean (the product path)": direct,
        f"direct, JPEG {q} on the source": lambda img, f: direct(jpeg(img, q), f),
        f"direct, JPEG {q} on the model-sized crop": lambda img, f: jpeg(direct(img, f), q),
        f"stored {stored} px, clean (as training's crops)": via_stored,
        f"stored {stored} px, JPEG {q} on the source": lambda img, f: via_stored(jpeg(img, q), f),
        f"stored {stored} px, JPEG {q} on that crop (as training)":
            lambda img, f: via_stored(img, f, lambda x: jpeg(x, q)),
    }
    print(f"{len(keep)} {args.dataset} sources of the {args.split} split with a face "
          f"({int(labels.sum())} fake)")
    for name, make in variants.items():
        scores = predictor.probabilities([make(images[i], faces[i]) for i in keep])
        print(f"{name:52s} AUC {roc_auc(labels, scores):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
