"""deepfake-detection: tell real face images from deepfakes.

The public API is imported lazily so that `import deepfake_detection` stays cheap:
`Predictor`, `load_model`, `predict_image`, `load_image`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Predictor", "load_image", "load_model", "predict_image"]


def __getattr__(name: str) -> Any:
    if name in {"Predictor", "load_model", "predict_image"}:
        from deepfake_detection.infer import predictor

        return getattr(predictor, name)
    if name == "load_image":
        from deepfake_detection.io.images import load_image

        return load_image
    raise AttributeError(name)
