"""Shared fixtures. Every image here is generated or public domain (scikit-image, matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """NASA's public-domain astronaut portrait (RGB, 512x512, one face)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="session")
def grace_hopper() -> np.ndarray:
    """The public-domain portrait of Grace Hopper that matplotlib ships (RGB, one face)."""
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        return np.asarray(Image.open(handle).convert("RGB")).copy()


@pytest.fixture(scope="session")
def tiny_onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small custom-CNN model with random weights, exported to ONNX: enough to test the plumbing."""
    import torch

    from deepfake_detection.export.onnx import export_onnx
    from deepfake_detection.models.registry import create_model, default_spec

    torch.manual_seed(0)
    model = create_model("custom_cnn").eval()
    spec = default_spec("custom_cnn", name="test-cnn")
    return export_onnx(model, spec, tmp_path_factory.mktemp("model") / "test-cnn.onnx")


@pytest.fixture()
def hide_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import ray` fail, as on an install without the `distributed` extra."""
    import builtins

    real_import = builtins.__import__

    def no_ray(name: str, *args: object, **kwargs: object) -> object:
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_ray)
