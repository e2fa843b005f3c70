"""Contact sheets of what training will see: augmented crops and self-blended fakes.

    augment_preview(crops, landmarks, Path("sheet.png"), augment=AugmentConfig())
    preview_from_paths(["face.jpg", "prepared/manifest.parquet"], Path("sheet.png"))

One row per face crop: the crop as the model sees it at evaluation, `per_row` train-augmented
versions, then `per_row` self-blended fakes, each followed by its blend mask as a small grey
thumbnail. Every tile is input_size px square under a LABEL_H px label strip, so the sheet is
    width  = input_size * (1 + 2 * per_row) + (input_size // 2) * per_row
    height = rows * (input_size + LABEL_H)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deepfake_detection.data.augment import AugmentConfig, build_eval_transform, build_train_transform
from deepfake_detection.data.blend import BlendConfig, self_blend
from deepfake_detection.errors import DFDError
from deepfake_detection.io.atomic import write_bytes_atomic

log = logging.getLogger(__name__)

LABEL_H = 18
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_EMPTY_GREY = 96


class PreviewError(DFDError):
    """Nothing could be previewed (no readable image, no face)."""


def sheet_size(rows: int, per_row: int, input_size: int) -> tuple[int, int]:
    """(width, height) in pixels of a sheet with `rows` rows."""
    return input_size * (1 + 2 * per_row) + (input_size // 2) * per_row, rows * (input_size + LABEL_H)


def augment_preview(
    images: list[np.ndarray],
    landmarks: list[np.ndarray | None],
    out_png: Path,
    *,
    augment: AugmentConfig,
    seed: int = 0,
    per_row: int = 4,
    input_size: int = 224,
    landmarks68: list[np.ndarray | None] | None = None,
    blend: BlendConfig | None = None,
) -> Path:
    """Write the contact sheet of `images` (RGB uint8 face crops; `landmarks[i]`: 5 points in crop
    pixels or None, then no fakes) to `out_png` atomically; returns `out_png`. Same seed, same sheet."""
    if not images:
        raise PreviewError("no images to preview")
    if len(landmarks) != len(images) or (landmarks68 is not None and len(landmarks68) != len(images)):
        raise ValueError("images, landmarks (and landmarks68) must have the same length")
    if per_row < 1:
        raise ValueError(f"per_row must be >= 1, got {per_row}")
    train_tf = build_train_transform(augment, input_size, seed=seed)
    eval_tf = build_eval_transform(input_size)
    rng = np.random.default_rng(seed)
    rows = []
    for i, image in enumerate(images):
        lm68 = landmarks68[i] if landmarks68 is not None else None
        rows.append(_row(image, landmarks[i], lm68, train_tf, eval_tf, rng, per_row, input_size, blend))
    sheet = np.vstack(rows)
    _write_png_atomic(sheet, Path(out_png))
    return Path(out_png)


def preview_from_paths(
    paths: Sequence[str | Path],
    out_png: Path,
    *,
    augment: AugmentConfig | None = None,
    blend: BlendConfig | None = None,
    seed: int = 0,
    per_row: int = 4,
    input_size: int = 224,
    crop_size: int = 256,
    detector: str = "auto",
    max_rows: int = 8,
) -> Path:
    """Images (the biggest face of each is detected and cropped at `crop_size` with THE crop protocol)
    and/or manifests (`*.parquet`: up to `max_rows` crops sampled with `seed`) -> `augment_preview`."""
    crops: list[np.ndarray] = []
    lms: list[np.ndarray | None] = []
    lms68: list[np.ndarray | None] = []
    det: Any = None
    for path in paths:
        if len(crops) >= max_rows:
            log.warning("augment preview: keeping the first %d faces, ignoring the rest", max_rows)
            break
        if str(path).lower().endswith(".parquet"):
            for crop, lm, lm68 in _from_manifest(Path(path), max_rows - len(crops), seed):
                crops.append(crop)
                lms.append(lm)
                lms68.append(lm68)
            continue
        if det is None:
            from deepfake_detection.faces import create_detector

            det = create_detector(detector)
        found = _from_image(path, det, crop_size)
        if found is not None:
            crops.append(found[0])
            lms.append(found[1])
            lms68.append(None)
    if not crops:
        raise PreviewError("no face crop found in the inputs")
    return augment_preview(crops, lms, out_png, augment=augment or AugmentConfig(), seed=seed,
                           per_row=per_row, input_size=input_size, landmarks68=lms68, blend=blend)


def _from_image(path: str | Path, det: Any, crop_size: int) -> tuple[np.ndarray, np.ndarray | None] | None:
    from deepfake_detection.faces import crop_face, crop_transform
    from deepfake_detection.io.images import load_image

    try:
        image = load_image(path)
    except DFDError as exc:
        log.warning("augment preview: skipping %s: %s", path, exc)
        return None
    faces = det.detect(image)
    if not faces:
        log.warning("augment preview: no face in %s", path)
        return None
    face = faces[0]  # the biggest
    crop = crop_face(image, face, crop_size)
    lm = None
    if face.landmarks is not None:  # original -> crop pixels, the manifest's convention
        m = crop_transform(face, crop_size)
        lm = np.asarray(face.landmarks, dtype=np.float64).reshape(5, 2) @ m[:, :2].T + m[:, 2]
    return crop, lm


def _from_manifest(
    path: Path, limit: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
    import pandas as pd

    from deepfake_detection.io.images import load_image

    table = pd.read_parquet(path)
    if "crop_path" not in table.columns:
        raise PreviewError(f"{path}: not a crop manifest (no crop_path column)")
    if len(table) > limit:
        table = table.sample(n=limit, random_state=seed).sort_index()
    out = []
    for _, row in table.iterrows():
        try:
            crop = load_image(path.parent / str(row["crop_path"]))
        except DFDError as exc:
            log.warning("augment preview: skipping %s: %s", row["crop_path"], exc)
            continue
        out.append((crop, _as_points(row.get("landmarks"), 5), _as_points(row.get("landmarks68"), 68)))
    return out


def _as_points(value: Any, n: int) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size != 2 * n or not np.isfinite(arr).all():
        return None
    return arr.reshape(n, 2)


def _row(
    image: np.ndarray,
    lm: np.ndarray | None,
    lm68: np.ndarray | None,
    train_tf: Any,
    eval_tf: Any,
    rng: np.random.Generator,
    per_row: int,
    size: int,
    blend: BlendConfig | None,
) -> np.ndarray:
    thumb = size // 2
    tiles = [_labelled(eval_tf(image=image)["image"], "original")]
    tiles += [_labelled(train_tf(image=image)["image"], f"aug {k + 1}") for k in range(per_row)]
    for k in range(per_row):
        fake, mask, note = None, None, "no landmarks"
        points = lm if lm is not None else lm68  # with 68 points the 5-point argument is not used
        if points is not None:
            try:
                fake, mask = self_blend(image, points, rng, landmarks68=lm68, cfg=blend)
            except ValueError as exc:
                note = "blend failed"
                log.warning("augment preview: self-blend failed: %s", exc)
        if fake is None or mask is None:
            tiles.append(_labelled(_blank(size, size, note), f"SBI {k + 1}"))
            tiles.append(_labelled(_blank(size, thumb, ""), ""))
            continue
        ratio = float(mask.max())
        tiles.append(_labelled(eval_tf(image=fake)["image"], f"SBI {k + 1} r={ratio:.2f}"))
        grey = cv2.resize((mask * 255).round().astype(np.uint8), (thumb, thumb), interpolation=cv2.INTER_AREA)
        column = np.full((size, thumb, 3), 255, dtype=np.uint8)
        column[:thumb] = grey[..., None]
        tiles.append(_labelled(column, "mask"))
    return np.hstack(tiles)


def _blank(h: int, w: int, note: str) -> np.ndarray:
    tile = np.full((h, w, 3), _EMPTY_GREY, dtype=np.uint8)
    if note:
        cv2.putText(tile, note, (4, h // 2), _FONT, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def _labelled(tile: np.ndarray, text: str) -> np.ndarray:
    strip = np.full((LABEL_H, tile.shape[1], 3), 255, dtype=np.uint8)
    if text:
        cv2.putText(strip, text, (3, LABEL_H - 5), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([strip, np.ascontiguousarray(tile)])


def _write_png_atomic(rgb: np.ndarray, out: Path) -> None:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise PreviewError(f"could not encode the preview sheet for {out}")
    write_bytes_atomic(out, data.tobytes())  # readers never see a half-written sheet
