"""Self-Blended Images (Shiota & Yamasaki, CVPR 2022), made on the fly from one real face crop.

    fake, mask = self_blend(crop, landmarks, rng)             # 5 points (the manifest's `landmarks`)
    fake, mask = self_blend(crop, landmarks, rng, landmarks68=lm68)   # full face hull when available

Recipe (SBI): the source is a copy of the target with colour changes (RGB shift, hue/saturation,
brightness/contrast) and a sharpness change (blur, down-up scaling or sharpening); source and mask
get the same small random shift/scale (the "swapped" face is slightly misaligned). The mask is the
convex hull of the face landmarks, deformed by a smooth random elastic warp and a random dilation or
erosion, Gaussian-blurred, and multiplied by a blend ratio drawn from {0.25, 0.5, 0.75, 1, 1, 1}:
    fake = source * mask + target * (1 - mask)
The fake then holds only blending boundaries and statistical mismatches, the traces all face swaps
share. Pixels where the returned mask is 0 are exactly the input's.

Mask construction:
- 68 points given (`landmarks68`, iBUG order): the convex hull of all 68 (jaw line + brows), as SBI
  does. Whenever 68 points are provided they are used.
- Only 5 points (left eye, right eye, nose, left and right mouth corner): a fallback face oval built
  in the affine frame of the face, origin at the eye midpoint E, x axis U = right eye - left eye,
  y axis V = mouth midpoint - E (so roll, scale and, roughly, yaw follow the landmarks). A point
  (a, b) of `_OVAL_5PT` is E + a U + b V. The template puts the brows at b ~ -0.45, the temples at
  |a| ~ 1.0 on the eye line, the cheeks at |a| ~ 0.9 on the mouth line and the chin at b ~ 1.55,
  from average face proportions (eye-mouth distance ~ interocular distance; mouth-chin ~ 0.55 of
  eye-mouth), i.e. roughly the hull the 68-point jaw + brows give. The random elastic warp and
  dilation/erosion then vary it like the 68-point hull.
  Whether this 5-point mask is as good as the 68-point one for training must be measured by
  training (the default-model issue does that); it is not assumed here.

Blending another person's face (`identity_blend`, the blended images of Face X-ray and I2G, Li et al.,
CVPR 2020): the source is a second real face crop (the donor), aligned onto the target by the
similarity transform between their 5 landmarks and colour-matched to the target's face (mean and
spread per Lab channel inside the mask), then put through the same colour/sharpness change, shift,
mask and blend as a self-blend. The fake then also holds what a face swap changes and a self-blend
cannot: another identity's texture and geometry inside the boundary.

Face-part blends (`BlendConfig.part_p`, default 0): that share of the blends (self or identity)
take their mask from one face part instead of the whole face: the eyes and brows, the nose, the mouth
or the lower face (nose to chin), in the same 5-point frame as the oval (`FACE_PARTS`). Reenactment
methods (Face2Face, NeuralTextures) change the mouth and expression, not the whole face, so a
whole-face boundary alone may teach a cue they lack (region-wise forgeries, as in SLADD, Chen et al.,
CVPR 2022). With 68 points given the part is still drawn from the 5 points.

Face-part cutout (`cut_out_face_part`, training's `data.part_cutout_p`): one face part (eyes and brows,
nose or mouth) painted black on a crop of either class, so that no single region's artefacts can carry
the verdict (landmark cutout, as in the DFDC winning solution, Seferbekov 2020).

Landmarks are in crop pixels, continuous coordinates (pixel (i, j) covers [j, j+1) x [i, i+1)).
All randomness comes from the `rng` argument: the same seed gives the same output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

Range = tuple[float, float]

# The 5-point face oval template, (a, b) in the eye/mouth affine frame described above; clockwise
# from the left brow end.
_OVAL_5PT = np.array([
    [-0.90, -0.35], [-0.50, -0.48], [0.00, -0.50], [0.50, -0.48], [0.90, -0.35],  # brows
    [1.02, 0.00], [1.00, 0.50], [0.90, 1.00], [0.65, 1.35], [0.35, 1.52], [0.00, 1.57],  # right side
    [-0.35, 1.52], [-0.65, 1.35], [-0.90, 1.00], [-1.00, 0.50], [-1.02, 0.00],  # left side
])


def _ellipse(centre: tuple[float, float], radii: tuple[float, float], n: int = 16) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([centre[0] + radii[0] * np.cos(t), centre[1] + radii[1] * np.sin(t)], axis=1)


# Face parts for part blends, (a, b) in the oval's eye/mouth frame (eyes at (+-0.5, 0), mouth
# corners near (+-0.4, 1), chin at (0, 1.57)). Their convex hulls are the part masks.
FACE_PARTS: dict[str, np.ndarray] = {
    "eyes": np.array([[-1.02, -0.42], [1.02, -0.42], [1.02, 0.30], [-1.02, 0.30]]),  # brows and eyes
    "nose": np.array([[-0.22, -0.05], [0.22, -0.05], [0.45, 0.82], [-0.45, 0.82]]),  # tip near b 0.7
    "mouth": _ellipse((0.0, 1.05), (0.62, 0.28)),  # lips; clear of the nose tip
    "lower_face": np.vstack([[[-1.00, 0.45], [1.00, 0.45]], _OVAL_5PT[7:14]]),  # nose to chin
}
_PART_NAMES = tuple(FACE_PARTS)
_SUBPIXEL_SHIFT = 4  # fillConvexPoly fractional bits: the hull keeps sub-pixel landmark precision
_MASK_FLOOR = 1.0 / 512  # blurred-mask tails below this change no pixel value; cut to a clean support


class BlendConfig(BaseModel):
    """Ranges of the self-blending recipe. Sizes given as fractions of the face size (the square root
    of the hull's area) so the recipe behaves the same on 256 and 288 px crops."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Source colour changes.
    rgb_shift: float = Field(default=20.0, ge=0.0, le=128.0)  # +- per channel, 0..255 units
    rgb_shift_p: float = Field(default=0.3, ge=0.0, le=1.0)
    hue_shift: float = Field(default=5.0, ge=0.0, le=90.0)  # +- degrees
    sat_scale: float = Field(default=0.2, ge=0.0, le=1.0)  # saturation x (1 +- this)
    hue_sat_p: float = Field(default=0.3, ge=0.0, le=1.0)
    brightness: float = Field(default=0.1, ge=0.0, le=1.0)  # +- fraction of 255
    contrast: float = Field(default=0.1, ge=0.0, le=1.0)  # x (1 +- this) around the mean
    brightness_contrast_p: float = Field(default=1.0, ge=0.0, le=1.0)
    # Source sharpness change: one of blur / down-up scaling / sharpening, each equally likely.
    sharpness_p: float = Field(default=1.0, ge=0.0, le=1.0)
    blur_sigma: Range = (0.5, 1.5)  # pixels
    downscale: Range = (0.25, 0.5)  # shrink factor before scaling back up
    sharpen_amount: Range = (0.2, 0.5)  # unsharp-mask strength
    # Source + mask geometry.
    translate: float = Field(default=0.03, ge=0.0, le=0.2)  # +- fraction of the crop side
    scale: Range = (0.95, 1.05)
    # Mask deformation.
    elastic_alpha: Range = (0.0, 0.04)  # displacement amplitude, fraction of face size
    elastic_grid: int = Field(default=4, ge=2, le=32)  # control points per side of the displacement field
    morph: Range = (-0.06, 0.06)  # erosion (< 0) / dilation (> 0) radius, fraction of face size
    mask_blur: Range = (0.02, 0.08)  # Gaussian sigma, fraction of face size
    blend_ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
    # Share of blends masked to one face part (FACE_PARTS, drawn uniformly) instead of the whole face.
    part_p: float = Field(default=0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> BlendConfig:
        for name in ("blur_sigma", "downscale", "sharpen_amount", "scale", "elastic_alpha", "morph",
                     "mask_blur"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: low > high ({lo}, {hi})")
        if not 0 < self.downscale[0] <= self.downscale[1] <= 1:
            raise ValueError(f"downscale must lie in (0, 1], got {self.downscale}")
        if self.blur_sigma[0] <= 0 or self.scale[0] <= 0:
            raise ValueError("blur_sigma and scale must be > 0")
        if self.elastic_alpha[0] < 0 or self.mask_blur[0] < 0:
            raise ValueError("elastic_alpha and mask_blur must be >= 0")
        if not self.blend_ratios or any(not 0 < r <= 1 for r in self.blend_ratios):
            raise ValueError(f"blend_ratios must be non-empty, each in (0, 1], got {self.blend_ratios}")
        return self


_DEFAULT = BlendConfig()


def face_hull_points(landmarks: np.ndarray, landmarks68: np.ndarray | None = None) -> np.ndarray:
    """The (N, 2) float64 points whose convex hull is the face mask: the 68 points when given, else
    the 5-point face oval (module docstring)."""
    if landmarks68 is not None:
        pts = _points(landmarks68, 68, "landmarks68")
        return pts
    return _in_face_frame(landmarks, _OVAL_5PT)


def face_part_points(landmarks: np.ndarray, part: str) -> np.ndarray:
    """The (N, 2) points whose convex hull is one face part's mask (`FACE_PARTS`), from 5 points."""
    if part not in FACE_PARTS:
        raise ValueError(f"unknown face part {part!r}; known: {sorted(FACE_PARTS)}")
    return _in_face_frame(landmarks, FACE_PARTS[part])


CutoutPart = Literal["eyes", "nose", "mouth"]  # not the lower face: it would hide all of a reenactment
CUTOUT_PARTS: tuple[CutoutPart, ...] = ("eyes", "nose", "mouth")


def cut_out_face_part(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
                      parts: Sequence[str] = CUTOUT_PARTS) -> np.ndarray:
    """A copy of `image` with one face part of `parts` (drawn uniformly) filled with black.
    Raises ValueError for a malformed image, degenerate landmarks or an unknown part."""
    _check_image(image, "image")
    if not parts:
        raise ValueError("part cutout needs at least one face part")
    part = parts[int(rng.integers(len(parts)))]
    inside = _hull_mask(face_part_points(landmarks, part), *image.shape[:2]) > 0
    out = image.copy()
    out[inside] = 0
    return out


def _in_face_frame(landmarks: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Template points (a, b) -> crop pixels E + a U + b V (module docstring)."""
    pts = _points(landmarks, 5, "landmarks")
    left_eye, right_eye, _, left_mouth, right_mouth = pts
    origin = (left_eye + right_eye) / 2
    u = right_eye - left_eye
    v = (left_mouth + right_mouth) / 2 - origin
    if abs(u[0] * v[1] - u[1] * v[0]) < 1e-6 * max(float(u @ u + v @ v), 1e-12) or u @ u < 1e-6:
        raise ValueError("degenerate 5-point landmarks: eyes and mouth are collinear or coincide")
    out: np.ndarray = origin + template[:, :1] * u + template[:, 1:] * v
    return out


def _blend_hull(landmarks: np.ndarray, landmarks68: np.ndarray | None, rng: np.random.Generator,
                cfg: BlendConfig) -> np.ndarray:
    """The whole face's hull points, or with probability `part_p` one face part's. With part_p 0
    nothing is drawn from `rng`, so recipes without parts keep their exact sample stream."""
    if cfg.part_p and rng.random() < cfg.part_p:
        if landmarks68 is not None:  # refused as a whole-face blend would refuse it
            _points(landmarks68, 68, "landmarks68")
        return face_part_points(landmarks, _PART_NAMES[int(rng.integers(len(_PART_NAMES)))])
    return face_hull_points(landmarks, landmarks68)


def self_blend(
    image: np.ndarray,
    landmarks: np.ndarray,
    rng: np.random.Generator,
    *,
    landmarks68: np.ndarray | None = None,
    cfg: BlendConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A self-blended pseudo-fake of the real face crop `image` (H, W, 3 uint8 RGB).

    `landmarks`: 5 points, (5, 2) or 10 floats, crop pixels; `landmarks68`: optional (68, 2) or 136;
    when given, the mask is built from it and `landmarks` is not used.
    Returns (fake uint8 (H, W, 3), mask float32 (H, W) in 0..1, already times the blend ratio, so
    fake == round(source * mask + image * (1 - mask)) and fake == image wherever mask == 0).
    Raises ValueError for a malformed image or landmarks, or a face hull that misses the crop.
    """
    _check_image(image, "image")
    cfg = cfg or _DEFAULT
    hull = _blend_hull(landmarks, landmarks68, rng, cfg)
    return _blend(image, image, _hull_mask(hull, *image.shape[:2]), rng, cfg)


def identity_blend(
    image: np.ndarray,
    landmarks: np.ndarray,
    donor: np.ndarray,
    donor_landmarks: np.ndarray,
    rng: np.random.Generator,
    *,
    landmarks68: np.ndarray | None = None,
    cfg: BlendConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A pseudo-fake of `image` whose face is another real face crop, `donor` (module docstring).

    `landmarks` / `donor_landmarks`: the 5 points of each crop (they align the donor and, without
    `landmarks68`, shape the mask). Returns (fake, mask) as `self_blend` does, with the same guarantees.
    Raises ValueError for malformed images or landmarks, or a face hull that misses the crop.
    """
    _check_image(image, "image")
    _check_image(donor, "donor")
    cfg = cfg or _DEFAULT
    target_5 = _points(landmarks, 5, "landmarks")
    hull = _blend_hull(target_5, landmarks68, rng, cfg)
    h, w = image.shape[:2]
    mask = _hull_mask(hull, h, w)
    _face_size(mask)  # before the colour match, which measures inside the mask
    m = _similarity(_points(donor_landmarks, 5, "donor_landmarks"), target_5)
    aligned = cv2.warpAffine(donor, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return _blend(image, _match_colour(aligned, image, mask), mask, rng, cfg)


def _blend(image: np.ndarray, source: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
           cfg: BlendConfig) -> tuple[np.ndarray, np.ndarray]:
    """The shared recipe: `source` (the face itself or an aligned donor) through the colour/sharpness
    change, shift and scale, blended into `image` inside the deformed hull `mask`."""
    face = _face_size(mask)
    changed = _colour_and_sharpness(source, rng, cfg)
    changed, mask = _shift_scale(changed, mask, rng, cfg)
    mask = _deform(mask, face, rng, cfg)
    ratio = float(cfg.blend_ratios[int(rng.integers(len(cfg.blend_ratios)))])
    mask *= ratio
    mask[mask < _MASK_FLOOR] = 0.0

    fake = image.copy()
    x0, y0, bw, bh = cv2.boundingRect((mask > 0).view(np.uint8))  # bool -> uint8 view: no copy
    if bw and bh:  # blend only in the mask's bounding box (speed); everything else stays the input
        y1, x1 = y0 + bh, x0 + bw
        m = mask[y0:y1, x0:x1, None]
        src = changed[y0:y1, x0:x1].astype(np.float32)
        tgt = image[y0:y1, x0:x1].astype(np.float32)
        blended = np.clip(np.rint(src * m + tgt * (1.0 - m)), 0, 255).astype(np.uint8)
        fake[y0:y1, x0:x1] = np.where(m > 0, blended, image[y0:y1, x0:x1])
    return fake, mask


def _face_size(mask: np.ndarray) -> float:
    """The square root of the hull's area; refuses a hull that (almost) misses the crop."""
    area = float(mask.sum())
    if area < 16:
        raise ValueError("the face hull of these landmarks (almost) misses the image")
    return math.sqrt(area)


def _check_image(image: np.ndarray, name: str) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{name} must be (H, W, 3) uint8, got {image.shape} {image.dtype}")


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 least-squares similarity transform (rotation, uniform scale, shift) taking `src` points
    onto `dst` (Umeyama, without reflection): closed form, so no RANSAC randomness."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var = float((s**2).sum())
    if var < 1e-6:
        raise ValueError("degenerate donor landmarks: the points coincide")
    u, sig, vt = np.linalg.svd(d.T @ s)
    flip = np.diag([1.0, 1.0 if np.linalg.det(u @ vt) > 0 else -1.0])
    rot = u @ flip @ vt
    scale = float((sig * np.diag(flip)).sum()) / var
    out: np.ndarray = np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])
    return out


def _match_colour(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`source` with the mean and spread of `target` per Lab channel, both measured inside `mask`
    (Reinhard's colour transfer): the donor's skin tone and lighting stop giving the fake away, so
    the model has to find the boundary and texture instead. float32 RGB 0..255."""
    inside = mask > 0
    src = cv2.cvtColor(source.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    tgt = cv2.cvtColor(target.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    s_in, t_in = src[inside], tgt[inside]
    gain = t_in.std(0) / np.maximum(s_in.std(0), 1e-3)
    src = (src - s_in.mean(0)) * gain + t_in.mean(0)
    src[..., 0] = np.clip(src[..., 0], 0.0, 100.0)
    rgb = cv2.cvtColor(src.astype(np.float32), cv2.COLOR_LAB2RGB) * 255.0
    return np.clip(rgb, 0.0, 255.0)


def _points(values: np.ndarray, n: int, name: str) -> np.ndarray:
    pts = np.asarray(values, dtype=np.float64)
    if pts.size != 2 * n:
        raise ValueError(f"{name} must hold {n} (x, y) points, got shape {pts.shape}")
    pts = pts.reshape(n, 2)
    if not np.isfinite(pts).all():
        raise ValueError(f"{name} contains non-finite values")
    return pts


def _hull_mask(points: np.ndarray, h: int, w: int) -> np.ndarray:
    """Filled convex hull as float32 0/1; continuous coordinates -> pixel centres (-0.5)."""
    hull = cv2.convexHull(np.rint((points - 0.5) * (1 << _SUBPIXEL_SHIFT)).astype(np.int32))
    mask = np.zeros((h, w), dtype=np.uint8)
    cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_SHIFT)
    return mask.astype(np.float32)


def _uniform(rng: np.random.Generator, r: Range) -> float:
    return float(rng.uniform(r[0], r[1])) if r[1] > r[0] else float(r[0])


def _colour_and_sharpness(image: np.ndarray, rng: np.random.Generator, cfg: BlendConfig) -> np.ndarray:
    out: np.ndarray = image.astype(np.float32)
    if rng.random() < cfg.rgb_shift_p:
        out += rng.uniform(-cfg.rgb_shift, cfg.rgb_shift, size=3).astype(np.float32)
    if rng.random() < cfg.hue_sat_p:
        hsv = cv2.cvtColor(np.clip(out, 0, 255) / 255.0, cv2.COLOR_RGB2HSV)  # float: H in degrees
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-cfg.hue_shift, cfg.hue_shift)) % 360.0
        hsv[..., 1] = np.clip(hsv[..., 1] * (1.0 + rng.uniform(-cfg.sat_scale, cfg.sat_scale)), 0.0, 1.0)
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
    if rng.random() < cfg.brightness_contrast_p:
        alpha = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
        beta = 255.0 * rng.uniform(-cfg.brightness, cfg.brightness)
        mean = float(out.mean())
        out = (out - mean) * alpha + mean + beta
    if rng.random() < cfg.sharpness_p:
        kind = int(rng.integers(3))
        if kind == 0:  # blur
            out = cv2.GaussianBlur(out, (0, 0), _uniform(rng, cfg.blur_sigma))
        elif kind == 1:  # down-up scaling: loses detail like a low-resolution swap
            h, w = out.shape[:2]
            f = _uniform(rng, cfg.downscale)
            small_size = (max(1, round(w * f)), max(1, round(h * f)))
            small = cv2.resize(out, small_size, interpolation=cv2.INTER_AREA)
            out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        else:  # unsharp mask
            amount = _uniform(rng, cfg.sharpen_amount)
            out = out + amount * (out - cv2.GaussianBlur(out, (0, 0), 1.0))
    return np.clip(out, 0.0, 255.0)


def _shift_scale(
    source: np.ndarray, mask: np.ndarray, rng: np.random.Generator, cfg: BlendConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The same small random scale (about the mask's centre) and shift for source and mask."""
    h, w = mask.shape
    s = _uniform(rng, cfg.scale)
    tx, ty = rng.uniform(-cfg.translate, cfg.translate, size=2) * (w, h)
    if s == 1.0 and tx == 0.0 and ty == 0.0:
        return source, mask
    mom = cv2.moments(mask)
    cx, cy = mom["m10"] / mom["m00"], mom["m01"] / mom["m00"]
    m = np.array([[s, 0.0, cx - s * cx + tx], [0.0, s, cy - s * cy + ty]])
    # Reflect the source border (no black bands), but nothing enters the mask from outside.
    source = cv2.warpAffine(source, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    mask = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)
    return source, mask


def _deform(mask: np.ndarray, face: float, rng: np.random.Generator, cfg: BlendConfig) -> np.ndarray:
    """Elastic warp, dilation/erosion and blur of the hull mask, renormalised to a peak of 1."""
    h, w = mask.shape
    alpha = _uniform(rng, cfg.elastic_alpha) * face
    if alpha > 0:
        g = cfg.elastic_grid
        # A smooth field: random control displacements, bicubically upsampled (cheaper than
        # blurring per-pixel noise, and its smoothness does not depend on the crop size).
        field: np.ndarray = rng.uniform(-1.0, 1.0, size=(g, g, 2)).astype(np.float32) * alpha
        field = cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC)
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        mask = cv2.remap(mask, gx + field[..., 0], gy + field[..., 1], cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    radius = round(_uniform(rng, cfg.morph) * face)
    if radius:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(radius) + 1, 2 * abs(radius) + 1))
        mask = cv2.dilate(mask, k) if radius > 0 else cv2.erode(mask, k)
    sigma = _uniform(rng, cfg.mask_blur) * face
    if sigma > 0.3:
        mask = cv2.GaussianBlur(mask, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    peak = float(mask.max())
    if peak <= 0:  # erosion swallowed a tiny hull: no fake rather than an unchanged 'fake'
        raise ValueError("the face mask vanished after deformation (face too small)")
    return np.asarray(mask / peak, dtype=np.float32)
