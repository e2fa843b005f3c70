"""Augmentation config/transforms, self-blended images, and the augment-preview sheet.
Public-domain images only (scikit-image's astronaut)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from deepfake_detection.cli import main
from deepfake_detection.data.augment import AugmentConfig, build_eval_transform, build_train_transform
from deepfake_detection.data.blend import (
    CUTOUT_PARTS,
    FACE_PARTS,
    BlendConfig,
    _similarity,
    cut_out_face_part,
    face_hull_points,
    face_part_points,
    identity_blend,
    self_blend,
)
from deepfake_detection.data.preview import LABEL_H, augment_preview, preview_from_paths, sheet_size
from deepfake_detection.evaluate.robustness import jpeg
from deepfake_detection.faces import Face, crop_face, crop_transform

# RetinaFace's astronaut face (original pixels), fixed here so these tests do not need the detector.
_BOX = np.array([177.93, 56.83, 273.12, 177.19], dtype=np.float32)
_LM = np.array([[204.81, 100.78], [247.38, 103.42], [223.56, 129.24], [202.49, 138.15], [244.22, 140.56]])
_NO_AUG = dict(hflip_p=0, rotate_p=0, brightness_contrast_p=0, hue_saturation_p=0, downscale_p=0, blur_p=0,
               noise_p=0, jpeg_p=0, cutout_p=0, crop_area=(1.0, 1.0), crop_ratio=(1.0, 1.0))


@pytest.fixture(scope="module")
def face_crop(astronaut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 256 px crop made with THE crop protocol and its 5 landmarks in crop pixels."""
    face = Face(_BOX, 0.99, _LM.astype(np.float32))
    m = crop_transform(face, 256)
    return crop_face(astronaut, face, 256), _LM @ m[:, :2].T + m[:, 2]


def _hf_energy(img: np.ndarray) -> float:
    """Energy of the high-frequency coefficients (u + v >= 6) of the 8x8 block DCT, what JPEG quantises
    away (a Laplacian would instead grow with JPEG's block edges)."""
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    h, w = (gray.shape[0] // 8) * 8, (gray.shape[1] // 8) * 8
    u, v = np.meshgrid(np.arange(8), np.arange(8))
    high = (u + v) >= 6
    return float(sum((cv2.dct(gray[y:y + 8, x:x + 8])[high] ** 2).sum()
                     for y in range(0, h, 8) for x in range(0, w, 8)))


def _synthetic_68(center: tuple[float, float], rx: float, ry: float) -> np.ndarray:
    """68 points in iBUG roles: a jaw arc, brows, nose, eyes and mouth inside an ellipse."""
    cx, cy = center
    t = np.linspace(np.pi * 0.95, np.pi * 0.05, 17)  # jaw: ear to ear through the chin
    jaw = np.stack([cx - rx * np.cos(t), cy + ry * np.sin(t) * 1.0], 1)
    brows = np.stack([np.linspace(cx - 0.8 * rx, cx + 0.8 * rx, 10), np.full(10, cy - 0.6 * ry)], 1)
    inner = np.stack([cx + rx * 0.5 * np.cos(np.linspace(0, 6.2, 41)),
                      cy + ry * 0.4 * np.sin(np.linspace(0, 6.2, 41))], 1)
    return np.vstack([jaw, brows, inner])


# --- augmentation -------------------------------------------------------------------------------------

def test_augment_config_rejects_unknown_keys_and_bad_ranges(tmp_path: Path) -> None:
    assert AugmentConfig.model_validate({"jpeg_p": 0.7}).jpeg_p == 0.7
    with pytest.raises(ValidationError, match="jpeg_qualty"):
        AugmentConfig.model_validate({"jpeg_qualty": [30, 100]})
    with pytest.raises(ValidationError):
        AugmentConfig.model_validate({"jpeg_quality": [90, 30]})
    with pytest.raises(ValidationError):
        AugmentConfig.model_validate({"blur_p": 1.5})
    cfg_file = tmp_path / "train.yaml"
    cfg_file.write_text("augment:\n  jpeg_quality: [40, 100]\n  blur_p: 0.25\n", encoding="utf-8")
    cfg = AugmentConfig.from_yaml(cfg_file)
    assert cfg.jpeg_quality == (40, 100) and cfg.blur_p == 0.25
    with pytest.raises(ValueError):
        BlendConfig.model_validate({"blend_ratio": [1.0]})


def test_train_transform_size_dtype_and_randomness(face_crop: tuple[np.ndarray, np.ndarray]) -> None:
    crop, _ = face_crop
    train = build_train_transform(AugmentConfig(), 224, seed=0)
    ref = build_eval_transform(224)(image=crop)["image"]
    outs = [train(image=crop)["image"] for _ in range(4)]
    for out in outs:
        assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert all(not np.array_equal(out, ref) for out in outs)
    assert not np.array_equal(outs[0], outs[1])
    # Same seed, same stream of augmentations.
    again = build_train_transform(AugmentConfig(), 224, seed=0)
    assert np.array_equal(again(image=crop)["image"], outs[0])


def test_eval_transform_is_a_deterministic_resize(face_crop: tuple[np.ndarray, np.ndarray]) -> None:
    crop, _ = face_crop
    tf = build_eval_transform(224)
    a, b = tf(image=crop)["image"], build_eval_transform(224)(image=crop)["image"]
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    expected = cv2.resize(crop, (224, 224), interpolation=cv2.INTER_AREA)
    assert np.abs(a.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize(("resize_filter", "interpolation"),
                         [("area", cv2.INTER_AREA), ("linear", cv2.INTER_LINEAR)])
def test_train_resize_filter(face_crop: tuple[np.ndarray, np.ndarray], resize_filter: str,
                             interpolation: int) -> None:
    """The final shrink to the input size: box averaging, or linear as crop_face warps at inference."""
    crop, _ = face_crop
    cfg = AugmentConfig(**{**_NO_AUG, "resize_filter": resize_filter})
    out = build_train_transform(cfg, 192, seed=0)(image=crop)["image"]
    expected = cv2.resize(crop, (192, 192), interpolation=interpolation)
    other = cv2.resize(crop, (192, 192), interpolation=cv2.INTER_LINEAR + cv2.INTER_AREA - interpolation)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    assert np.abs(out.astype(int) - other.astype(int)).max() > 10  # the two filters really differ
    # Validation shrinks with the same filter, so checkpoints are picked on crops shrunk as trained.
    val = build_eval_transform(192, resize_filter)(image=crop)["image"]
    assert np.abs(val.astype(int) - expected.astype(int)).max() <= 1
    with pytest.raises(ValueError, match="resize_filter"):
        build_eval_transform(192, "cubic")


def test_jpeg_quality_is_applied(face_crop: tuple[np.ndarray, np.ndarray]) -> None:
    crop, _ = face_crop
    plain = build_train_transform(AugmentConfig(**_NO_AUG), 256, seed=0)(image=crop)["image"]
    assert np.array_equal(plain, crop)  # everything off: identity (checks the off switches too)
    cfg = AugmentConfig(**{**_NO_AUG, "jpeg_p": 1.0, "jpeg_quality": (30, 30)})
    jpeg = build_train_transform(cfg, 256, seed=0)(image=crop)["image"]
    assert not np.array_equal(jpeg, crop)
    cfg95 = AugmentConfig(**{**_NO_AUG, "jpeg_p": 1.0, "jpeg_quality": (95, 95)})
    jpeg95 = build_train_transform(cfg95, 256, seed=0)(image=crop)["image"]
    assert _hf_energy(jpeg) < 0.5 * _hf_energy(crop)
    assert _hf_energy(jpeg) < 0.5 * _hf_energy(jpeg95)


def test_low_resolution_jpeg(face_crop: tuple[np.ndarray, np.ndarray]) -> None:
    """jpeg_scale_range < 1 compresses a shrunk copy (coarser blocks on the face), reproducibly per seed."""
    crop, _ = face_crop
    full = AugmentConfig(**{**_NO_AUG, "jpeg_p": 1.0, "jpeg_quality": (50, 50)})
    half = AugmentConfig(**{**_NO_AUG, "jpeg_p": 1.0, "jpeg_quality": (50, 50),
                            "jpeg_scale_range": (0.5, 0.5)})
    at_full = build_train_transform(full, 256, seed=0)(image=crop)["image"]
    at_half = build_train_transform(half, 256, seed=0)(image=crop)["image"]
    assert at_half.shape == crop.shape and at_half.dtype == np.uint8
    assert _hf_energy(at_half) < 0.7 * _hf_energy(at_full)  # more detail lost than at full size
    shrunk = cv2.resize(crop, (128, 128), interpolation=cv2.INTER_AREA)
    expected = cv2.resize(jpeg(shrunk, 50), (256, 256), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(at_half, expected)  # exactly: shrink, JPEG, scale back
    ranged = AugmentConfig(**{**_NO_AUG, "jpeg_p": 1.0, "jpeg_scale_range": (0.3, 1.0)})
    first, again = (build_train_transform(ranged, 256, seed=7)(image=crop)["image"] for _ in range(2))
    assert np.array_equal(first, again)
    with pytest.raises(ValidationError, match="jpeg_scale_range"):
        AugmentConfig.model_validate({"jpeg_scale_range": [0.0, 1.0]})


def test_h264_augmentation(face_crop: tuple[np.ndarray, np.ndarray]) -> None:
    """h264_p: a shrunk copy goes through one H.264 frame at a random CRF and back; off by default,
    so earlier recipes' augmentation streams are unchanged."""
    from deepfake_detection.data.augment import LowResCodec
    from deepfake_detection.evaluate.robustness import h264

    crop, _ = face_crop
    assert not any(isinstance(t, LowResCodec) for t in build_train_transform(AugmentConfig(), 224).transforms)
    cfg = AugmentConfig(**{**_NO_AUG, "h264_p": 1.0, "h264_crf": (40, 40), "h264_scale_range": (0.5, 0.5)})
    assert any(isinstance(t, LowResCodec) for t in build_train_transform(cfg, 224).transforms)
    out = build_train_transform(cfg, 256, seed=0)(image=crop)["image"]
    shrunk = cv2.resize(crop, (128, 128), interpolation=cv2.INTER_AREA)
    assert np.array_equal(out, cv2.resize(h264(shrunk, 40), (256, 256), interpolation=cv2.INTER_LINEAR))
    assert _hf_energy(out) < 0.5 * _hf_energy(crop)
    ranged = AugmentConfig(**{**_NO_AUG, "h264_p": 1.0})
    first, again = (build_train_transform(ranged, 256, seed=7)(image=crop)["image"] for _ in range(2))
    assert np.array_equal(first, again) and not np.array_equal(first, crop)
    for bad in ({"h264_crf": [30, 60]}, {"h264_scale_range": [0.0, 1.0]}):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            AugmentConfig.model_validate(bad)


# --- self-blending ------------------------------------------------------------------------------------

def test_self_blend_changes_only_inside_the_mask(face_crop: tuple[np.ndarray, np.ndarray]) -> None:
    crop, lm = face_crop
    for seed in range(8):
        fake, mask = self_blend(crop, lm, np.random.default_rng(seed))
        assert fake.shape == crop.shape and fake.dtype == np.uint8
        assert mask.shape == crop.shape[:2] and mask.dtype == np.float32
        assert mask.min() >= 0.0 and mask.max() <= 1.0
        outside = mask == 0
        assert np.array_equal(fake[outside], crop[outside])
        assert outside.mean() > 0.2  # the background is left alone
        assert np.abs(fake.astype(int) - crop.astype(int))[mask > 0.2].mean() > 0.5


def test_self_blend_mask_covers_the_face_region(face_crop: tuple[np.ndarray, np.ndarray]) -> None:
    crop, lm = face_crop
    hull = face_hull_points(lm)
    x0, y0 = hull.min(0)
    x1, y1 = hull.max(0)
    margin = 0.35 * max(x1 - x0, y1 - y0)
    for seed in range(8):
        _, mask = self_blend(crop, lm, np.random.default_rng(seed))
        ys, xs = np.nonzero(mask)
        assert xs.min() >= x0 - margin and xs.max() <= x1 + margin
        assert ys.min() >= y0 - margin and ys.max() <= y1 + margin
        # The eyes, nose and mouth are inside, at (nearly) the full blend ratio.
        at_points = mask[np.clip(lm[:, 1].astype(int), 0, 255), np.clip(lm[:, 0].astype(int), 0, 255)]
        assert (at_points >= 0.9 * mask.max()).all()
        assert mask[0, 0] == 0 and mask[-1, -1] == 0


def test_self_blend_is_deterministic_and_ratio_from_config(face_crop: tuple[np.ndarray, np.ndarray]) -> None:
    crop, lm = face_crop
    a = self_blend(crop, lm, np.random.default_rng(3))
    b = self_blend(crop, lm, np.random.default_rng(3))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    c = self_blend(crop, lm, np.random.default_rng(4))
    assert not np.array_equal(a[0], c[0])
    ratios = {round(float(self_blend(crop, lm, np.random.default_rng(s))[1].max()), 3) for s in range(40)}
    assert ratios <= {0.25, 0.5, 0.75, 1.0} and len(ratios) >= 3
    _, half = self_blend(crop, lm, np.random.default_rng(0), cfg=BlendConfig(blend_ratios=(0.5,)))
    assert half.max() == pytest.approx(0.5)


def test_self_blend_prefers_68_points(face_crop: tuple[np.ndarray, np.ndarray]) -> None:
    crop, lm = face_crop
    lm68 = _synthetic_68((100.0, 150.0), 45.0, 55.0)  # deliberately away from the 5-point face
    fake, mask = self_blend(crop, lm, np.random.default_rng(0), landmarks68=lm68.reshape(-1))
    ys, xs = np.nonzero(mask)
    assert abs(xs.mean() - 100) < 12 and abs(ys.mean() - 150) < 15  # follows the 68-point hull
    assert np.array_equal(fake[mask == 0], crop[mask == 0])
    hull = face_hull_points(lm, lm68)
    assert hull.shape == (68, 2)


def test_part_blends_mask_one_face_part(face_crop: tuple[np.ndarray, np.ndarray]) -> None:
    crop, lm = face_crop
    eyes, nose, mouth = lm[:2], lm[2:3], lm[3:]
    def inside(part: str, points: np.ndarray) -> np.ndarray:
        hull = face_part_points(lm, part).astype(np.float32)
        return np.array([cv2.pointPolygonTest(cv2.convexHull(hull), (float(x), float(y)), False) > 0
                         for x, y in points])
    assert inside("eyes", eyes).all() and not inside("eyes", mouth).any()
    assert inside("mouth", mouth).all() and not inside("mouth", np.vstack([eyes, nose])).any()
    assert inside("nose", nose).all() and not inside("nose", np.vstack([eyes, mouth])).any()
    assert inside("lower_face", mouth).all() and not inside("lower_face", eyes).any()
    whole = self_blend(crop, lm, np.random.default_rng(0), cfg=_PLAIN)[1]
    parts = BlendConfig(part_p=1.0, morph=(0.0, 0.0), elastic_alpha=(0.0, 0.0), mask_blur=(0.0, 0.0),
                        translate=0, scale=(1.0, 1.0), blend_ratios=(1.0,))
    seen = set()
    for seed in range(24):
        fake, mask = self_blend(crop, lm, np.random.default_rng(seed), cfg=parts)
        assert 0 < (mask > 0).sum() < 0.6 * (whole > 0).sum()  # a part, not the face
        assert np.array_equal(fake[mask == 0], crop[mask == 0])
        for part in FACE_PARTS:  # which part: its hull is the (undeformed) mask
            if np.array_equal(mask > 0, _part_mask(lm, part)):
                seen.add(part)
    assert seen == set(FACE_PARTS)  # every part is drawn
    donor = identity_blend(crop, lm, crop, lm, np.random.default_rng(1), cfg=parts)[1]
    assert (donor > 0).sum() < 0.6 * (whole > 0).sum()  # identity blends take parts too
    with pytest.raises(ValueError, match="unknown face part"):
        face_part_points(lm, "ears")
    with pytest.raises(ValueError, match="degenerate"):
        self_blend(crop, np.zeros((5, 2)), np.random.default_rng(0), cfg=parts)


def test_part_cutout_blacks_out_one_face_part(face_crop: tuple[np.ndarray, np.ndarray]) -> None:
    crop, lm = face_crop
    seen = set()
    for seed in range(24):
        out = cut_out_face_part(crop, lm, np.random.default_rng(seed))
        changed = np.any(out != crop, axis=2)
        parts = [p for p in CUTOUT_PARTS if np.all(out[_part_mask(lm, p)] == 0)]
        assert len(parts) == 1, parts  # exactly one part is black...
        assert not changed[~_part_mask(lm, parts[0])].any()  # ...and nothing else moved
        seen.add(parts[0])
    assert seen == set(CUTOUT_PARTS)
    assert np.array_equal(cut_out_face_part(crop, lm, np.random.default_rng(5)),
                          cut_out_face_part(crop, lm, np.random.default_rng(5)))  # rng decides
    with pytest.raises(ValueError, match="degenerate"):
        cut_out_face_part(crop, np.zeros((5, 2)), np.random.default_rng(0))


def test_part_cutout_draws_only_the_parts_asked(face_crop: tuple[np.ndarray, np.ndarray]) -> None:
    crop, lm = face_crop
    mouth = _part_mask(lm, "mouth") & ~_part_mask(lm, "nose")
    seen = set()
    for seed in range(16):
        out = cut_out_face_part(crop, lm, np.random.default_rng(seed), parts=("eyes", "nose"))
        assert np.array_equal(out[mouth], crop[mouth])  # the mouth is never cut out
        seen |= {p for p in ("eyes", "nose") if np.all(out[_part_mask(lm, p)] == 0)}
    assert seen == {"eyes", "nose"}
    for bad in ((), ("chin",)):
        with pytest.raises(ValueError, match="face part"):
            cut_out_face_part(crop, lm, np.random.default_rng(0), parts=bad)


def _part_mask(lm: np.ndarray, part: str) -> np.ndarray:
    from deepfake_detection.data.blend import _hull_mask
    return _hull_mask(face_part_points(lm, part), 256, 256) > 0


def test_self_blend_rejects_bad_landmarks(face_crop: tuple[np.ndarray, np.ndarray]) -> None:
    crop, lm = face_crop
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="5"):
        self_blend(crop, lm[:4], rng)
    with pytest.raises(ValueError, match="non-finite"):
        self_blend(crop, np.full((5, 2), np.nan), rng)
    with pytest.raises(ValueError, match="misses"):
        self_blend(crop, lm + 1000, rng)
    with pytest.raises(ValueError, match="degenerate"):
        self_blend(crop, np.zeros((5, 2)), rng)
    with pytest.raises(ValueError, match="uint8"):
        self_blend(crop.astype(np.float32), lm, rng)


_PLAIN = BlendConfig(rgb_shift_p=0, hue_sat_p=0, brightness_contrast_p=0, sharpness_p=0, translate=0,
                     scale=(1.0, 1.0), blend_ratios=(1.0,))  # the source goes in unchanged


def test_similarity_recovers_a_known_transform() -> None:
    angle, scale, shift = 0.3, 1.4, np.array([12.0, -7.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = _LM.astype(np.float64)
    m = _similarity(src, src @ rot.T + shift)
    assert np.allclose(m, np.hstack([rot, shift[:, None]]), atol=1e-9)
    with pytest.raises(ValueError, match="degenerate"):
        _similarity(np.zeros((5, 2)), src)


def test_identity_blend_with_itself_is_its_self_blend(face_crop: tuple[np.ndarray, np.ndarray]) -> None:
    # Donor = target: alignment and colour match are the identity, so only the shared recipe is left.
    crop, lm = face_crop
    for seed in range(4):
        fake, mask = identity_blend(crop, lm, crop, lm, np.random.default_rng(seed))
        ref, ref_mask = self_blend(crop, lm, np.random.default_rng(seed))
        assert np.array_equal(mask, ref_mask)
        assert np.abs(fake.astype(int) - ref.astype(int)).max() <= 2  # Lab round trip
        assert np.array_equal(fake[mask == 0], crop[mask == 0])


def test_identity_blend_aligns_and_colour_matches(face_crop: tuple[np.ndarray, np.ndarray]) -> None:
    crop, lm = face_crop
    # The donor: the same face moved, turned, shrunk and tinted red, with its landmarks moved alike.
    m = cv2.getRotationMatrix2D((128.0, 128.0), 15.0, 0.8)
    m[:, 2] += (10.0, -6.0)
    donor = cv2.warpAffine(crop, m, (256, 256), borderMode=cv2.BORDER_REFLECT_101).astype(np.int16)
    donor[..., 0] += 60
    donor = np.clip(donor, 0, 255).astype(np.uint8)
    donor_lm = lm @ m[:, :2].T + m[:, 2]
    fake, mask = identity_blend(crop, lm, donor, donor_lm, np.random.default_rng(0), cfg=_PLAIN)
    core = mask > 0.99
    assert core.sum() > 2000
    err = np.abs(fake.astype(float) - crop.astype(float))[core]
    assert err.mean() < 8 and err[:, 0].mean() < 8  # aligned back onto the target, the red tint matched away
    pasted = cv2.warpAffine(donor, cv2.invertAffineTransform(m), (256, 256))  # aligned, not matched
    assert np.abs(pasted.astype(float) - crop.astype(float))[core][:, 0].mean() > 35
    assert np.array_equal(fake[mask == 0], crop[mask == 0])


def test_identity_blend_another_face_and_bad_input(face_crop: tuple[np.ndarray, np.ndarray]) -> None:
    crop, lm = face_crop
    other = np.ascontiguousarray(crop[:, ::-1])  # the mirror: a different face layout
    other_lm = np.stack([255.999 - lm[:, 0], lm[:, 1]], 1)[[1, 0, 2, 4, 3]]
    a = identity_blend(crop, lm, other, other_lm, np.random.default_rng(5), cfg=_PLAIN)
    b = identity_blend(crop, lm, other, other_lm, np.random.default_rng(5), cfg=_PLAIN)
    assert np.array_equal(a[0], b[0])  # the rng decides everything
    assert np.abs(a[0].astype(int) - crop.astype(int))[a[1] > 0.99].mean() > 2  # the face changed
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="donor must be"):
        identity_blend(crop, lm, other[..., 0], other_lm, rng)
    with pytest.raises(ValueError, match="donor_landmarks"):
        identity_blend(crop, lm, other, other_lm[:3], rng)
    with pytest.raises(ValueError, match="misses"):
        identity_blend(crop, lm + 1000, other, other_lm, rng)


# --- preview ------------------------------------------------------------------------------------------

def test_augment_preview_sheet(tmp_path: Path, face_crop: tuple[np.ndarray, np.ndarray]) -> None:
    crop, lm = face_crop
    out = augment_preview([crop, crop], [lm, None], tmp_path / "sheet.png", augment=AugmentConfig(),
                          per_row=2, input_size=128)
    assert Image.open(out).size == sheet_size(2, 2, 128) == (128 * 5 + 64 * 2, 2 * (128 + LABEL_H))
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]  # no temporary left behind


def test_preview_from_manifest(tmp_path: Path, face_crop: tuple[np.ndarray, np.ndarray]) -> None:
    import pandas as pd

    crop, lm = face_crop
    (tmp_path / "crops").mkdir()
    Image.fromarray(crop).save(tmp_path / "crops" / "a.png")
    pd.DataFrame({"crop_path": ["crops/a.png"], "landmarks": [lm.reshape(-1).tolist()],
                  "landmarks68": [None], "label": [0]}).to_parquet(tmp_path / "manifest.parquet")
    out = preview_from_paths([tmp_path / "manifest.parquet"], tmp_path / "m.png", per_row=1, input_size=96)
    assert Image.open(out).size == sheet_size(1, 1, 96)


def test_cli_augment_preview(
    tmp_path: Path, astronaut: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(src)
    out = tmp_path / "out" / "sheet.png"
    assert main(["augment-preview", str(src), "--out", str(out), "--count", "2", "--seed", "1"]) == 0
    assert Image.open(out).size == sheet_size(1, 2, 224)
    bad = tmp_path / "bad.yaml"
    bad.write_text("jpeg_p: 0.5\nunknown_key: 1\n", encoding="utf-8")
    assert main(["augment-preview", str(src), "--out", str(out), "--config", str(bad)]) == 2
    assert "unknown_key" in capsys.readouterr().err
