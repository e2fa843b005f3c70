"""THE crop protocol: how a detected face becomes a size x size model input.

Detection, data preparation and training all call `crop_face`, so a model always sees crops made
exactly as its training crops were. Any behaviour change here must bump CROP_PROTOCOL_VERSION
(and CropProtocol.version's default).

Version 1:
- align=False, or no landmarks: the square of side max(w, h) * scale centred on the box centre.
- align=True with landmarks: a similarity transform (cv2.estimateAffinePartial2D, LMEDS) taking the
  5 landmarks onto the ArcFace 5-point template, placed so that the face occupies the same fraction
  of the crop as in the unaligned crop.
- Either way ONE cv2.warpAffine from the original pixels to size x size, black outside the image;
  INTER_CUBIC when enlarging, INTER_LINEAR otherwise. When shrinking by 2x or more (k < 0.5 output
  px per source px) the source region the warp reads (only it, not the frame) is first reduced by the
  integer factor floor(1 / k) with INTER_AREA, i.e. exact box averaging, so large faces are not
  aliased; the warp then shrinks by less than 2x more.
Coordinates are continuous pixel-edge coordinates (pixel (i, j) covers [j, j+1) x [i, i+1)), as
in Face.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from deepfake_detection.errors import ModelError
from deepfake_detection.faces.base import as_rgb_uint8
from deepfake_detection.faces.types import Face
from deepfake_detection.models.spec import CropProtocol

CROP_PROTOCOL_VERSION = 1
DEFAULT_PROTOCOL = CropProtocol()  # frozen, so a safe shared default

# ArcFace (insightface) 112x112 template: left eye, right eye, nose, left/right mouth corner.
_ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
# Where a RetinaFace box sits in template coordinates, measured by fitting the template to frontal
# faces (astronaut, Grace Hopper): centre (56.6, 67.0) / (57.6, 64.7), longer side 107 / 98 px.
# Part of protocol v1: placing the template with these makes aligned crops frame faces like box crops.
_TEMPLATE_BOX_CENTER = np.array([56.0, 66.0])
_TEMPLATE_BOX_SIDE = 102.0


class UnsupportedCropProtocolError(ModelError):
    """A model asks for a crop protocol version this code does not implement."""


def _check(protocol: CropProtocol, size: int) -> None:
    if protocol.version != CROP_PROTOCOL_VERSION:
        raise UnsupportedCropProtocolError(
            f"crop protocol version {protocol.version} is not supported (this code implements "
            f"version {CROP_PROTOCOL_VERSION}); use a matching deepfake-detection release"
        )
    if protocol.scale <= 0:
        raise ValueError(f"crop scale must be > 0, got {protocol.scale}")
    if size < 1:
        raise ValueError(f"crop size must be >= 1, got {size}")


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama without reflection) src -> dst, as a 2x3 matrix."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    a = (s * d).sum() / max((s**2).sum(), 1e-12)  # scale*cos
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / max((s**2).sum(), 1e-12)  # scale*sin
    rot = np.array([[a, -b], [b, a]])
    return np.hstack([rot, (mu_d - rot @ mu_s)[:, None]])


def crop_transform(face: Face, size: int, protocol: CropProtocol = DEFAULT_PROTOCOL) -> np.ndarray:
    """2x3 float64 matrix taking original-image coordinates (Face convention) to crop coordinates."""
    _check(protocol, size)
    if protocol.align and face.landmarks is not None:
        z = size / (protocol.scale * _TEMPLATE_BOX_SIDE)
        dst = (_ARCFACE_112 - _TEMPLATE_BOX_CENTER) * z + size / 2.0
        src = np.asarray(face.landmarks, dtype=np.float64).reshape(5, 2)
        # LMEDS: one badly placed landmark (occlusion, profile) does not drag the whole fit.
        m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
        return m.astype(np.float64) if m is not None else _similarity(src, dst)
    box = np.asarray(face.box, dtype=np.float64)
    side = max(box[2] - box[0], box[3] - box[1], 1e-3) * protocol.scale
    k = size / side
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return np.array([[k, 0.0, k * (side / 2 - cx)], [0.0, k, k * (side / 2 - cy)]])


def crop_square_box(face: Face, protocol: CropProtocol = DEFAULT_PROTOCOL) -> np.ndarray:
    """The square [x1, y1, x2, y2] (float32, original pixels) the crop covers; for aligned crops the
    covered square is also rotated by the alignment angle, which this box ignores (for drawing)."""
    m = crop_transform(face, 1000, protocol)  # any size: the covered region does not depend on it
    k = math.sqrt(abs(np.linalg.det(m[:, :2])))
    center = np.linalg.solve(m[:, :2], np.array([500.0, 500.0]) - m[:, 2])
    half = 500.0 / k
    return np.array([*(center - half), *(center + half)], dtype=np.float32)


def _to_index(m: np.ndarray) -> np.ndarray:
    """Continuous-coordinate matrix -> the pixel-index-coordinate matrix warpAffine expects."""
    out = m.copy()
    out[:, 2] += m[:, :2] @ [0.5, 0.5] - 0.5
    return out


def crop_face(
    image: np.ndarray, face: Face, size: int, protocol: CropProtocol = DEFAULT_PROTOCOL
) -> np.ndarray:
    """The (size, size, 3) uint8 crop of `face` from the full-resolution RGB `image`."""
    image = as_rgb_uint8(image)
    m = crop_transform(face, size, protocol)
    k = math.sqrt(abs(np.linalg.det(m[:, :2])))  # output pixels per source pixel
    dsize = (size, size)
    black = (0, 0, 0)
    if k >= 0.5:
        interp = cv2.INTER_CUBIC if k > 1.0 else cv2.INTER_LINEAR
        return cv2.warpAffine(image, _to_index(m), dsize, flags=interp, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=black)
    # Shrinking >= 2x: box-average just the source region the warp reads, by an integer factor.
    n = math.floor(1.0 / k)
    h, w = image.shape[:2]
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64)
    src = corners @ inv[:, :2].T + inv[:, 2]
    margin = 2 * n + 2  # bilinear support (1 reduced pixel) plus rounding
    x0 = max(0, math.floor(src[:, 0].min()) - margin)
    y0 = max(0, math.floor(src[:, 1].min()) - margin)
    x1 = min(w, math.ceil(src[:, 0].max()) + margin)
    y1 = min(h, math.ceil(src[:, 1].max()) + margin)
    if x1 <= x0 or y1 <= y0:  # the crop lies entirely outside the image
        return np.zeros((size, size, 3), dtype=np.uint8)
    x0, x1 = _multiple_of(x0, x1, w, n)
    y0, y1 = _multiple_of(y0, y1, h, n)
    roi = image[y0:y1, x0:x1]  # a view: no copy of the full frame
    rw, rh = max(1, round((x1 - x0) / n)), max(1, round((y1 - y0) / n))
    small = cv2.resize(roi, (rw, rh), interpolation=cv2.INTER_AREA)
    # Continuous coords: reduced = (original - origin) * (reduced size / roi size).
    sx, sy = rw / (x1 - x0), rh / (y1 - y0)
    to_orig = np.array([[1 / sx, 0.0, x0], [0.0, 1 / sy, y0], [0.0, 0.0, 1.0]])
    m_small = m @ to_orig
    return cv2.warpAffine(small, _to_index(m_small), dsize, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=black)


def _multiple_of(lo: int, hi: int, limit: int, n: int) -> tuple[int, int]:
    """Grow [lo, hi) inside [0, limit) to a multiple of n: INTER_AREA's exact-integer path is ~4x faster."""
    need = -(hi - lo) % n
    grow = min(need, limit - hi)
    hi, need = hi + grow, need - grow
    return lo - min(need, lo), hi


def crop_faces(
    image: np.ndarray, faces: Sequence[Face], size: int, protocol: CropProtocol = DEFAULT_PROTOCOL
) -> list[np.ndarray]:
    return [crop_face(image, f, size, protocol) for f in faces]
