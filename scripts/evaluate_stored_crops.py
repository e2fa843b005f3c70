"""`dfd evaluate` with faces cropped as training's stored crops are: `crop_face` at the stored crop
size (256 px from `dfd prepare`), then shrunk to the model's input with INTER_AREA, instead of straight
to the input size as the product path does. Answers whether serving crops made like the training
crops would lower the JPEG cost (eleventh session: it lowers it and loses more elsewhere).

    .venv/bin/python scripts/evaluate_stored_crops.py MODEL.onnx MANIFEST --out DIR [--stored 256] \
        [dfd evaluate options, e.g. --split val]

Diagnosis only: the figures of the product are `dfd evaluate`'s; use the validation split.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import cv2
import numpy as np

import deepfake_detection.infer.predictor as predictor_module
import deepfake_detection.infer.video as video_module
from deepfake_detection.faces import Face
from deepfake_detection.faces import crop as crop_module
from deepfake_detection.models.spec import CropProtocol


def stored_size_crop(image: np.ndarray, face: Face, size: int, protocol: CropProtocol, stored: int,
                     degrade: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """The crop `dfd prepare` stores (side `stored`), optionally degraded there (as training's
    augmentation degrades stored crops), then shrunk to `size` as training's eval transform does."""
    crop = crop_module.crop_face(image, face, stored, protocol)
    if degrade is not None:
        crop = degrade(crop)
    if stored == size:
        return crop
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def use_stored_size_crops(stored: int) -> None:
    """Route the predictor's and the video path's cropping through `stored_size_crop`."""
    def one(image: np.ndarray, face: Face, size: int, protocol: CropProtocol = crop_module.DEFAULT_PROTOCOL,
            ) -> np.ndarray:
        return stored_size_crop(image, face, size, protocol, stored)

    def many(image: np.ndarray, faces: Sequence[Face], size: int,
             protocol: CropProtocol = crop_module.DEFAULT_PROTOCOL) -> list[np.ndarray]:
        return [one(image, f, size, protocol) for f in faces]

    predictor_module.crop_faces = many
    video_module.crop_face = one


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("manifest")
    parser.add_argument("--stored", type=int, default=256, help="the manifest's crop size")
    args, rest = parser.parse_known_args()
    if args.stored < 8:
        parser.error("--stored must be >= 8")
    use_stored_size_crops(args.stored)
    from deepfake_detection.cli import main as dfd

    return dfd(["evaluate", args.model, args.manifest, *rest])


if __name__ == "__main__":
    sys.exit(main())
