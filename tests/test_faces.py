"""Face detection and crop protocol, on public-domain images only (scikit-image, matplotlib)."""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image
from skimage import data

from deepfake_detection.errors import DFDError, ImageError
from deepfake_detection.faces import (
    CROP_PROTOCOL_VERSION,
    DetectorUnavailableError,
    Face,
    FaceDetector,
    UnknownDetectorError,
    UnsupportedCropProtocolError,
    available_detectors,
    create_detector,
    crop_face,
    crop_faces,
    crop_square_box,
    crop_transform,
)
from deepfake_detection.faces import base as faces_base
from deepfake_detection.models.spec import CropProtocol

# Measured: RetinaFace on the native 512x512 astronaut gives [177.9, 56.8, 273.1, 177.2]; Haar gives
# [177, 66, 272, 161] (IoU 0.79 with this). Grace Hopper (512x600): RetinaFace [177.7, 106.5, 353.9, 327.7].
ASTRONAUT_FACE = np.array([178, 57, 273, 177], dtype=np.float32)
GRACE_FACE = np.array([178, 107, 354, 328], dtype=np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def eye_angle(landmarks: np.ndarray) -> float:
    dx, dy = landmarks[1] - landmarks[0]
    return abs(math.degrees(math.atan2(dy, dx)))


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def grace() -> np.ndarray:
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


@pytest.fixture(scope="module")
def retina() -> FaceDetector:
    return create_detector("retinaface")


@pytest.fixture(scope="module")
def haar() -> FaceDetector:
    return create_detector("haar")


# ------------------------------------------------------------------ RetinaFace


@pytest.mark.parametrize("side", [256, 512, 1024, 2048])
def test_retinaface_finds_astronaut_at_several_scales(retina, astronaut, side):
    interp = cv2.INTER_AREA if side < 512 else cv2.INTER_CUBIC
    image = cv2.resize(astronaut, (side, side), interpolation=interp)
    faces = retina.detect(image)
    assert len(faces) == 1
    face = faces[0]
    ref = ASTRONAUT_FACE * (side / 512)  # boxes come back in this image's pixels, not the 640 copy
    assert iou(face.box, ref) > 0.5
    assert face.box.dtype == np.float32 and face.box.shape == (4,)
    assert face.score > 0.9
    lm = face.landmarks
    assert lm is not None and lm.shape == (5, 2) and lm.dtype == np.float32
    x1, y1, x2, y2 = face.box
    assert np.all((lm[:, 0] > x1) & (lm[:, 0] < x2) & (lm[:, 1] > y1) & (lm[:, 1] < y2))
    assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])  # eyes above nose above mouth
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # image-left point first


def paste(canvas: np.ndarray, image: np.ndarray, box: np.ndarray, side: int, x: int, y: int) -> np.ndarray:
    """Paste a square patch (1.8x the face box, resized to side) at (x, y); return the face's new box."""
    cx, cy = (box[:2] + box[2:]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) * 0.9
    x0, y0 = int(round(cx - half)), int(round(cy - half))
    n = int(round(2 * half))
    patch = image[max(0, y0) : y0 + n, max(0, x0) : x0 + n]
    f = side / n
    canvas[y : y + side, x : x + side] = cv2.resize(patch[:n, :n], (side, side), interpolation=cv2.INTER_AREA)
    return (box - [x0, y0, x0, y0]) * f + [x, y, x, y]


def test_retinaface_finds_several_pasted_faces(retina, astronaut, grace):
    rng = np.random.default_rng(0)
    canvas = np.clip(rng.normal(120, 20, (720, 1280, 3)), 0, 255).astype(np.uint8)
    expected = [
        paste(canvas, astronaut, ASTRONAUT_FACE, 130, 40, 60),  # face 57x72 px, 29x36 in the 640 copy
        paste(canvas, astronaut, ASTRONAUT_FACE, 300, 250, 300),
        paste(canvas, grace, GRACE_FACE, 170, 700, 40),
        paste(canvas, grace, GRACE_FACE, 380, 880, 320),
    ]
    faces = retina.detect(canvas)
    assert len(faces) == len(expected)
    for box in expected:
        assert max(iou(f.box, box) for f in faces) > 0.6, box
    areas = [f.width * f.height for f in faces]
    assert areas == sorted(areas, reverse=True)


def test_small_faces_need_a_larger_max_side(astronaut):
    # A 35x44 px face is 17x22 px in the 640 px copy, where it scores <= 0.35 (< 0.8); at full
    # resolution it scores 0.999. max_side is the speed/recall knob.
    canvas = np.full((720, 1280, 3), 120, np.uint8)
    box = paste(canvas, astronaut, ASTRONAUT_FACE, 80, 600, 300)
    assert create_detector("retinaface").detect(canvas) == []
    faces = create_detector("retinaface", max_side=1280).detect(canvas)
    assert len(faces) == 1 and iou(faces[0].box, box) > 0.6


def face_free_images() -> dict[str, np.ndarray]:
    gradient = np.tile(np.linspace(0, 255, 1280, dtype=np.float32), (720, 1))
    noise = np.random.default_rng(1).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    return {
        "coffee": data.coffee(),
        "rocket": data.rocket(),
        "gradient": np.dstack([gradient] * 3).astype(np.uint8),
        "noise": noise,
    }


@pytest.mark.parametrize("name", ["coffee", "rocket", "gradient", "noise"])
def test_retinaface_finds_nothing_in_face_free_images(retina, name):
    # Measured best scores: coffee 0.09, rocket 0.09, noise 0.06, gradient none (threshold 0.8).
    assert retina.detect(face_free_images()[name]) == []


def test_detection_is_deterministic(retina, astronaut):
    a, b = retina.detect(astronaut), retina.detect(astronaut.copy())
    assert len(a) == len(b) == 1
    assert np.array_equal(a[0].box, b[0].box) and np.array_equal(a[0].landmarks, b[0].landmarks)


def test_detect_accepts_grayscale_and_rejects_bad_input(retina, astronaut):
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    assert len(retina.detect(gray)) == 1
    with pytest.raises(ImageError):
        retina.detect(astronaut.astype(np.float32))
    with pytest.raises(ImageError):
        retina.detect(np.zeros((10, 10, 4), np.uint8))


# ------------------------------------------------------------------ Haar, base class, registry


def test_haar_finds_astronaut(haar, astronaut):
    faces = haar.detect(astronaut)
    assert len(faces) == 1
    assert iou(faces[0].box, ASTRONAUT_FACE) > 0.5
    assert faces[0].landmarks is None
    assert 0.5 < faces[0].score <= 1.0


def test_haar_finds_nothing_in_coffee(haar):
    assert haar.detect(data.coffee()) == []


def test_min_face_is_in_original_pixels(astronaut):
    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)  # face ~380x480 px
    assert len(create_detector("retinaface", min_face=300).detect(big)) == 1
    assert create_detector("retinaface", min_face=400).detect(big) == []
    assert create_detector("haar", min_face=200).detect(astronaut) == []


class _FixedDetector(FaceDetector):
    """Returns fixed faces in the coordinates of whatever (downscaled) image it is given."""

    def _detect(self, image: np.ndarray) -> list[Face]:
        self.seen = image.shape
        lm = np.tile(np.float32([[50, 50]]), (5, 1))
        return [
            Face(np.float32([10, 10, 30, 30]), 0.9, lm),  # 20 px here, 40 px in the original
            Face(np.float32([600, 300, 700, 400]), 0.8),  # sticks out of the 640x360 copy
            Face(np.float32([100, 100, 105, 105]), 0.99),  # 10 px in the original -> dropped
        ]


def test_base_detect_downscales_maps_back_clips_filters_and_sorts():
    det = _FixedDetector(max_side=640, min_face=20)
    faces = det.detect(np.zeros((720, 1280, 3), np.uint8))
    assert det.seen == (360, 640, 3)
    assert len(faces) == 2
    np.testing.assert_allclose(faces[0].box, [1200, 600, 1280, 720])  # scaled x2, clipped; biggest first
    np.testing.assert_allclose(faces[1].box, [20, 20, 60, 60])
    np.testing.assert_allclose(faces[1].landmarks, np.full((5, 2), 100))


def test_registry(monkeypatch, caplog):
    assert {"retinaface", "haar"} <= set(available_detectors())
    with pytest.raises(UnknownDetectorError, match="retinaface") as err:
        create_detector("no-such-detector")
    assert isinstance(err.value, DFDError)
    assert type(create_detector()).name == "retinaface"
    assert type(create_detector("auto", max_side=320)).name == "retinaface"

    class Broken(FaceDetector):
        def __init__(self, **kwargs):
            raise DetectorUnavailableError("no onnxruntime here")

        def _detect(self, image):
            return []

    monkeypatch.setitem(faces_base._REGISTRY, "retinaface", Broken)
    with caplog.at_level(logging.WARNING):
        det = create_detector("auto", max_side=320, threads=1)
    assert type(det).name == "haar" and det.max_side == 320
    assert "falling back" in caplog.text


# ------------------------------------------------------------------ crop protocol


def test_protocol_version_constant():
    assert CROP_PROTOCOL_VERSION == CropProtocol().version == 1
    face = Face(np.float32([10, 10, 50, 50]), 1.0)
    with pytest.raises(UnsupportedCropProtocolError) as err:
        crop_face(np.zeros((64, 64, 3), np.uint8), face, 32, CropProtocol(version=2))
    assert isinstance(err.value, DFDError)


@pytest.mark.parametrize("size", [1, 64, 224, 299])
@pytest.mark.parametrize("align", [False, True])
def test_crop_shape_and_dtype(retina, astronaut, size, align):
    face = retina.detect(astronaut)[0]
    out = crop_face(astronaut, face, size, CropProtocol(align=align))
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    assert len(crop_faces(astronaut, [face, face], size)) == 2


@pytest.mark.parametrize("size", [13, 40, 104, 401])  # shrink >2x (area path), shrink, 1:1, enlarge
def test_box_crop_is_centred_and_square(size):
    # Box 80x60 centred at (140.5, 110.5): the crop is the 104 px square [88.5, 58.5, 192.5, 162.5].
    image = np.zeros((300, 400, 3), np.uint8)
    image[59:162, 89:192] = 255  # white square = crop square minus 0.5 px on every side
    image[108:113, 138:143] = (255, 255, 0)  # yellow marker centred on (140.5, 110.5)
    face = Face(np.float32([100.5, 80.5, 180.5, 140.5]), 1.0)
    np.testing.assert_allclose(crop_square_box(face), [88.5, 58.5, 192.5, 162.5])
    out = crop_face(image, face, size).astype(np.float64)
    # The marker (no blue) sits in the middle.
    weight = out[..., 1] - out[..., 2]
    ys, xs = np.mgrid[:size, :size] + 0.5  # pixel centres, continuous coordinates
    centre = np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
    np.testing.assert_allclose(centre, [size / 2, size / 2], atol=0.1)  # measured <= 0.07 (resampling phase)
    # The white square fills the crop: only a border of about one source pixel is darker.
    inner = out[size // 8 : size - size // 8, size // 8 : size - size // 8, 1]
    assert inner.min() > 200
    # A 2x bigger protocol scale shows the black surround.
    wide = crop_face(image, face, size, CropProtocol(scale=2.6))
    assert wide[0, 0].max() == 0 and wide[size // 2, round(size * 0.32), 1] > 200


def test_out_of_image_regions_are_black():
    image = np.full((100, 100, 3), 200, np.uint8)
    face = Face(np.float32([-20, -20, 20, 20]), 1.0)  # centred on the top-left corner
    for size in (26, 104):  # area path (52 px -> 26) and plain warp
        out = crop_face(image, face, size, CropProtocol(scale=1.3))
        q = size // 2
        assert out[: q - 2, : q - 2].max() == 0 and out[: q - 2, q + 2 :].max() == 0
        assert out[q + 2 :, q + 2 :].min() == 200
    far = Face(np.float32([1000, 1000, 1400, 1400]), 1.0)  # entirely outside
    assert crop_face(image, far, 32).max() == 0 and crop_face(image, far, 224).max() == 0


def test_strong_shrink_does_not_alias():
    checker = ((np.indices((2000, 2000)).sum(0) % 2) * 255).astype(np.uint8)
    image = np.dstack([checker] * 3)
    out = crop_face(image, Face(np.float32([300, 300, 1500, 1500]), 1.0), 100)
    assert abs(out.mean() - 127.5) < 2 and out.std() < 3  # plain bilinear sampling gives 0/255 noise


def test_crop_is_resolution_independent(retina, astronaut):
    face = retina.detect(astronaut)[0]
    small = crop_face(astronaut, face, 160).astype(np.int16)
    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    large = crop_face(big, face.scaled(4.0), 160).astype(np.int16)
    assert np.abs(small - large).mean() < 4


def test_alignment_levels_the_eyes(retina, astronaut):
    rot = cv2.getRotationMatrix2D((256, 256), 20, 1.0)
    rotated = cv2.warpAffine(astronaut, rot, (512, 512))
    face = retina.detect(rotated)[0]
    assert eye_angle(face.landmarks) > 15
    aligned = CropProtocol(align=True)
    m = crop_transform(face, 224, aligned)
    assert eye_angle(face.landmarks @ m[:, :2].T + m[:, 2]) < 3
    crop = crop_face(rotated, face, 224, aligned)
    again = retina.detect(crop)
    assert len(again) == 1 and eye_angle(again[0].landmarks) < 3
    # The face fills the aligned crop about as much as the unaligned crop (same protocol scale).
    plain = retina.detect(crop_face(astronaut, retina.detect(astronaut)[0], 224))[0]
    assert 0.8 < again[0].height / plain.height < 1.25


def test_align_without_landmarks_falls_back_to_box_crop(astronaut):
    face = Face(ASTRONAUT_FACE, 1.0, None)
    np.testing.assert_array_equal(
        crop_face(astronaut, face, 128, CropProtocol(align=True)), crop_face(astronaut, face, 128)
    )


@pytest.mark.parametrize("align", [False, True])
def test_crop_is_deterministic(retina, astronaut, align):
    face = retina.detect(astronaut)[0]
    protocol = CropProtocol(align=align)
    first = crop_face(astronaut, face, 224, protocol)
    for _ in range(3):
        np.testing.assert_array_equal(crop_face(astronaut.copy(), face, 224, protocol), first)
