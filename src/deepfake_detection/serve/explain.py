"""Heatmaps per face that show which parts of the crop drove the verdict (on request).

Two methods behind one interface (`heatmaps(crops, fake)` -> (N, S, S) maps in 0..1):
- Grad-CAM, from the PyTorch weights (the `train` extra): the gradients of the logit (of minus the
  logit for faces judged real) with respect to the last convolution's activations, averaged per
  channel, weight those activations; negative evidence is cut off (ReLU). One backward pass.
- Occlusion, on any model the Predictor runs (ONNX Runtime: the slim install and the container):
  a grey patch slides over the crop and each position's heat is how much covering it lowers the
  verdict's probability (raises it, for faces judged real). About 170 extra crops scored per face.
"""

from __future__ import annotations

import base64
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np

from deepfake_detection.faces import Face, crop_faces, crop_square_box
from deepfake_detection.infer.preprocess import to_batch
from deepfake_detection.infer.results import ImageResult
from deepfake_detection.models.spec import ModelSpec

if TYPE_CHECKING:
    from torch import nn

    from deepfake_detection.infer.predictor import Predictor


class Explainer(Protocol):
    method: str  # "grad-cam" or "occlusion", reported with each heatmap

    @property
    def spec(self) -> ModelSpec: ...

    def heatmaps(self, crops: list[np.ndarray], fake: list[bool]) -> np.ndarray: ...


class OcclusionMap:
    """Occlusion sensitivity with the served predictor (no PyTorch): see the module docstring."""

    method = "occlusion"

    def __init__(self, predictor: Predictor, *, patches: int = 7) -> None:
        self.predictor = predictor
        size = predictor.spec.input_size
        self.patch = max(2, size // patches)  # 32 px at 224: about an eye or a mouth corner
        self.stride = max(1, self.patch // 2)  # half-overlapping positions: a smoother map
        # The grey the model sees as zero after normalisation: covering adds no colour of its own.
        self.fill = np.round(np.asarray(predictor.spec.mean) * 255).astype(np.uint8)

    @property
    def spec(self) -> ModelSpec:
        return self.predictor.spec

    def heatmaps(self, crops: list[np.ndarray], fake: list[bool]) -> np.ndarray:
        size = self.spec.input_size
        starts = list(range(0, size - self.patch + 1, self.stride))
        if starts[-1] != size - self.patch:
            starts.append(size - self.patch)  # the last row and column are covered too
        maps = np.zeros((len(crops), size, size), np.float32)
        for i, (crop, is_fake) in enumerate(zip(crops, fake, strict=True)):
            variants = [crop]
            for y in starts:
                for x in starts:
                    covered = crop.copy()
                    covered[y : y + self.patch, x : x + self.patch] = self.fill
                    variants.append(covered)
            probs = self.predictor.probabilities(variants)
            drop = (probs[0] - probs[1:]) if is_fake else (probs[1:] - probs[0])  # evidence lost
            heat, count = np.zeros((size, size), np.float32), np.zeros((size, size), np.float32)
            for k, (y, x) in enumerate((y, x) for y in starts for x in starts):
                heat[y : y + self.patch, x : x + self.patch] += drop[k]
                count[y : y + self.patch, x : x + self.patch] += 1
            heat = np.maximum(heat / np.maximum(count, 1), 0)  # only evidence for the verdict
            maps[i] = heat / max(float(heat.max()), 1e-12)
        return maps


class GradCam:
    method = "grad-cam"

    def __init__(self, model: nn.Module, spec: ModelSpec) -> None:
        from torch import nn

        # An ensemble's verdict is its members' mean: one map per member (its last convolution), averaged.
        members = list(getattr(model, "members", [model]))
        convs = [[m for m in member.modules() if isinstance(m, nn.Conv2d)] for member in members]
        if not all(convs):
            raise ValueError(f"{spec.arch} has no convolution layer for Grad-CAM")
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)  # gradients are only needed for the activations
        self.layers = [c[-1] for c in convs]
        self.spec = spec
        self._lock = threading.Lock()  # the hook and the graph belong to one call at a time

    @classmethod
    def from_file(cls, path: Path) -> GradCam:
        from deepfake_detection.models.files import load_model_file

        model, spec = load_model_file(path)
        return cls(model, spec)

    def heatmaps(self, crops: list[np.ndarray], fake: list[bool]) -> np.ndarray:
        """(N, S, S) float32 maps in 0..1 for model-sized RGB crops: evidence for "fake" where
        `fake[i]`, else for "real" (the explained class is the verdict)."""
        import torch
        import torch.nn.functional as F

        size = self.spec.input_size
        if not crops:
            return np.zeros((0, size, size), np.float32)
        x = torch.from_numpy(to_batch(crops, self.spec)).requires_grad_(True)
        captured: list[torch.Tensor] = []

        def keep(_module: Any, _inputs: Any, output: torch.Tensor) -> None:
            output.retain_grad()
            captured.append(output)

        with self._lock, torch.enable_grad():
            handles = [layer.register_forward_hook(keep) for layer in self.layers]
            try:
                logits = self.model(x).reshape(-1)
                sign = torch.tensor([1.0 if f else -1.0 for f in fake])
                (logits * sign).sum().backward()  # eval mode: each logit depends on its own crop only
            finally:
                for handle in handles:
                    handle.remove()
        cams = []
        for a in captured:
            assert a.grad is not None
            cam = torch.relu((a.grad.mean(dim=(2, 3), keepdim=True) * a.detach()).sum(dim=1, keepdim=True))
            cams.append(F.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)[:, 0])
        cam = torch.stack(cams).mean(dim=0)
        peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
        return (cam / peak).numpy().astype(np.float32)


def heatmap_png(heat: np.ndarray) -> str:
    """A colour heatmap whose opacity follows the heat, as a PNG data URL (drawn over the face)."""
    level = np.clip(heat, 0, 1)
    colour = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = (level * 180).astype(np.uint8)
    ok, png = cv2.imencode(".png", np.dstack([colour, alpha]))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii")


def explain(cam: Explainer, image: np.ndarray, result: ImageResult) -> list[dict[str, Any]]:
    """Per face of `result`: the square the crop covers (image pixels) and its heatmap."""
    faces = [Face(np.asarray(f.box, np.float32), f.detector_score,
                  None if f.landmarks is None else np.asarray(f.landmarks, np.float32)) for f in result.faces]
    crops = crop_faces(image, faces, cam.spec.input_size, cam.spec.crop)
    fake = [f.fake_probability >= result.threshold for f in result.faces]
    maps = cam.heatmaps(crops, fake)
    return [{"face": i, "target": "fake" if is_fake else "real", "method": cam.method,
             "box": [round(float(v), 1) for v in crop_square_box(face, cam.spec.crop)],
             "heatmap": heatmap_png(heat)}
            for i, (face, heat, is_fake) in enumerate(zip(faces, maps, fake, strict=True))]
