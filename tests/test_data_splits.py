"""Group-aware splits, leave-one-method-out, cross-split near-duplicates and the Parquet manifest."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepfake_detection.data import manifest as manifest_mod
from deepfake_detection.data.dedup import (
    find_cross_split_duplicates,
    hamming,
    perceptual_hash,
    remove_cross_split_duplicates,
)
from deepfake_detection.data.manifest import read_manifest, records_to_frame, write_manifest
from deepfake_detection.data.splits import assign_splits, check_no_leak
from deepfake_detection.data.types import MANIFEST_COLUMNS, CropRecord
from deepfake_detection.errors import DatasetError


def random_frame(seed: int, n_groups: int = 60, methods: tuple[str, ...] = ("A", "B", "C")) -> pd.DataFrame:
    """Groups of random sizes, each with some reals and fakes of random methods."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        for _ in range(int(rng.integers(1, 30))):
            fake = rng.random() < 0.6
            rows.append({"group": f"g{g}", "label": int(fake),
                         "method": str(rng.choice(methods)) if fake else "real", "split": ""})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- splits


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_groups_never_shared_and_ratios_roughly_kept(seed: int) -> None:
    df = random_frame(seed)
    out = assign_splits(df, seed=seed)
    check_no_leak(out)
    assert (out.groupby("group")["split"].nunique() == 1).all()
    share = out["split"].value_counts(normalize=True)
    assert abs(share["train"] - 0.8) < 0.06
    assert abs(share["val"] - 0.1) < 0.05 and abs(share["test"] - 0.1) < 0.05
    assert (pd.crosstab(out["split"], out["label"]) > 0).all().all()  # both labels in every split
    assert out["split"].tolist() == assign_splits(df, seed=seed)["split"].tolist()  # deterministic
    assert out.index.equals(df.index) and len(out) == len(df)


def test_seed_changes_assignment() -> None:
    df = random_frame(0)
    assert assign_splits(df, seed=0)["split"].tolist() != assign_splits(df, seed=1)["split"].tolist()


def test_check_no_leak_raises() -> None:
    df = pd.DataFrame({"group": ["a", "a", "b"], "split": ["train", "test", "val"]})
    with pytest.raises(DatasetError, match="a"):
        check_no_leak(df)


@pytest.mark.parametrize("held", ["A", "B"])
def test_leave_one_method_out(held: str) -> None:
    df = random_frame(7, n_groups=80, methods=("A", "B", "C", "D", "E", "F"))
    out = assign_splits(df, seed=3, leave_out_method=held)
    check_no_leak(out)
    assert (out.loc[out["method"] == held, "split"] == "test").all()
    assert held not in set(out.loc[out["split"] != "test", "method"])
    held_groups = set(out.loc[out["method"] == held, "group"])
    assert set(out.loc[out["split"] == "test", "group"]) == held_groups  # test = exactly those groups
    assert {"train", "val"} <= set(out["split"])
    with pytest.raises(DatasetError, match="no crop"):
        assign_splits(df, leave_out_method="Z")


def test_official_splits_used_and_kept_group_consistent() -> None:
    df = pd.DataFrame({
        "group": ["a", "a", "b", "c", "c", "d"], "label": [0, 1, 0, 1, 0, 1],
        "split": ["train", "train", "val", "train", "test", "train"],
    })
    out = assign_splits(df)
    assert out["split"].tolist() == ["train", "train", "val", "test", "test", "train"]  # c: strictest
    check_no_leak(out)
    ignored = assign_splits(df, use_official=False, ratios=(1.0, 0.0, 0.0))
    assert set(ignored["split"]) == {"train"}


def test_partial_official_splits_fix_only_their_groups() -> None:
    df = random_frame(5)
    df.loc[df["group"] == "g0", "split"] = "test"
    out = assign_splits(df, seed=5)
    assert (out.loc[out["group"] == "g0", "split"] == "test").all()
    assert {"train", "val", "test"} <= set(out["split"])
    check_no_leak(out)


# ---------------------------------------------------------------- pHash and near-duplicates


def face_like(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return np.ascontiguousarray(cv2.resize(small, (128, 128), interpolation=cv2.INTER_CUBIC))


def jpeg(img: np.ndarray, quality: int = 70) -> np.ndarray:
    ok, enc = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = cv2.imdecode(enc, cv2.IMREAD_COLOR)
    assert ok and decoded is not None
    return np.ascontiguousarray(decoded[:, :, ::-1])


def test_phash_close_for_recompressed_far_for_other() -> None:
    img = face_like(0)
    h = perceptual_hash(img)
    assert -(2**63) <= h < 2**63
    assert hamming(h, perceptual_hash(jpeg(img))) <= 4
    noisy = np.clip(img + np.random.default_rng(1).normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    assert hamming(h, perceptual_hash(noisy)) <= 4
    assert hamming(h, perceptual_hash(face_like(1))) > 12
    assert perceptual_hash(img[:, :, 0]) == perceptual_hash(np.ascontiguousarray(img[:, :, 0]))  # gray input


def brute_pairs(df: pd.DataFrame, max_distance: int) -> set[tuple[str, str]]:
    out = set()
    rows = list(df[["crop_path", "phash", "split"]].itertuples(index=False))
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if a.split != b.split and hamming(int(a.phash), int(b.phash)) <= max_distance:
                out.add(tuple(sorted((a.crop_path, b.crop_path))))
    return out


@pytest.mark.parametrize("max_distance", [0, 4, 7])
def test_find_duplicates_matches_brute_force(max_distance: int) -> None:
    rng = np.random.default_rng(max_distance)
    base = rng.integers(-(2**63), 2**63 - 1, 40, dtype=np.int64).view(np.uint64)
    flips = rng.integers(0, 64, (400, 3)).astype(np.uint64)
    noise = np.zeros(400, np.uint64)
    for k in range(3):  # 0-3 random bit flips around 40 centres
        noise |= np.where(rng.random(400) < 0.5, np.uint64(1) << flips[:, k], np.uint64(0))
    hashes = (base[rng.integers(0, 40, 400)] ^ noise).view(np.int64)
    df = pd.DataFrame({"crop_path": [f"c{i}.png" for i in range(400)], "phash": hashes,
                       "split": rng.choice(["train", "val", "test"], 400)})
    pairs = find_cross_split_duplicates(df, max_distance)
    got = {tuple(sorted(p)) for p in zip(pairs["crop_path_a"], pairs["crop_path_b"], strict=True)}
    assert got == brute_pairs(df, max_distance) and len(got) == len(pairs)
    rank = {"train": 0, "val": 1, "test": 2}
    assert (pairs["split_a"].map(rank) < pairs["split_b"].map(rank)).all()
    assert (pairs["distance"] <= max_distance).all()


def test_remove_duplicates_from_train_only() -> None:
    imgs = [face_like(s) for s in range(6)]
    rows = [
        ("test/0.png", imgs[0], "test"), ("train/0-copy.png", jpeg(imgs[0]), "train"),
        ("val/1.png", imgs[1], "val"), ("train/1-copy.png", jpeg(imgs[1], 60), "train"),
        ("val/2.png", imgs[2], "val"), ("test/2-copy.png", jpeg(imgs[2]), "test"),
        ("train/3.png", imgs[3], "train"), ("train/3-copy.png", jpeg(imgs[3]), "train"),
        ("train/4.png", imgs[4], "train"), ("test/5.png", imgs[5], "test"),
    ]
    df = pd.DataFrame({"crop_path": [r[0] for r in rows], "phash": [perceptual_hash(r[1]) for r in rows],
                       "split": [r[2] for r in rows], "group": [r[0] for r in rows]})
    kept, report = remove_cross_split_duplicates(df)
    assert sorted(report["crop_path"]) == ["train/0-copy.png", "train/1-copy.png"]
    assert set(report["duplicate_of"]) == {"test/0.png", "val/1.png"}
    assert set(df.loc[df["split"] != "train", "crop_path"]) <= set(kept["crop_path"])  # eval data intact
    assert {"train/3.png", "train/3-copy.png", "train/4.png"} <= set(kept["crop_path"])  # same split: kept
    assert len(kept) == len(df) - 2
    none_kept, none_report = remove_cross_split_duplicates(df.iloc[6:])
    assert len(none_kept) == 4 and none_report.empty


# ---------------------------------------------------------------- manifest


def record(i: int, landmarks: bool = True) -> CropRecord:
    return CropRecord(
        crop_path=f"crops/{i}.png", source_path=f"/data/v{i}.mp4", source_id=f"folder:v{i}",
        frame_index=i * 10, face_index=0, box=[1.5, 2.0, 30.0, 40.0],
        landmarks=[float(k) for k in range(10)] if landmarks else None,
        det_score=0.99, label=i % 2, method="real" if i % 2 == 0 else "unknown", dataset="folder",
        group=f"folder:v{i}", content_hash="ab" * 32, phash=-(2**63) + i, crop_size=224, crop_protocol=1,
        split="train", landmarks68=[0.5] * 136 if i == 1 else None,
    )


def test_manifest_round_trip(tmp_path: Path) -> None:
    df = records_to_frame([record(i, landmarks=i != 2) for i in range(3)])
    assert tuple(df.columns) == MANIFEST_COLUMNS
    for col in ("frame_index", "face_index", "label", "phash", "crop_size", "crop_protocol"):
        assert df[col].dtype == np.int64
    path = write_manifest(df, tmp_path / "out" / "manifest.parquet")
    schema = pq.read_schema(path)
    for col in ("box", "landmarks", "landmarks68"):
        assert pa.types.is_list(schema.field(col).type) and schema.field(col).type.value_type == pa.float32()
    back = read_manifest(path)
    assert tuple(back.columns) == MANIFEST_COLUMNS and back.dtypes.equals(df.dtypes)
    assert back["phash"].tolist() == df["phash"].tolist()
    assert back["landmarks"].iloc[2] is None and back["landmarks"].iloc[0].dtype == np.float32
    np.testing.assert_array_equal(back["box"].iloc[1], np.array([1.5, 2.0, 30.0, 40.0], np.float32))
    assert len(back["landmarks68"].iloc[1]) == 136
    assert [p.name for p in path.parent.iterdir()] == ["manifest.parquet"]
    empty = read_manifest(write_manifest(records_to_frame([]), tmp_path / "empty.parquet"))
    assert empty.empty and empty.dtypes.equals(df.dtypes)


def test_manifest_missing_column_refused(tmp_path: Path) -> None:
    df = records_to_frame([record(0)])
    with pytest.raises(DatasetError, match="phash"):
        write_manifest(df.drop(columns=["phash"]), tmp_path / "m.parquet")
    df.drop(columns=["group", "phash"]).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DatasetError, match="group, phash"):
        read_manifest(tmp_path / "bad.parquet")


def test_manifest_atomic_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "manifest.parquet"
    write_manifest(records_to_frame([record(0)]), target)
    before = target.read_bytes()

    def broken(table: object, where: object, **kwargs: object) -> None:
        where.write(b"PAR1 half a file")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(manifest_mod.pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        write_manifest(records_to_frame([record(1), record(2)]), target)
    assert target.read_bytes() == before  # the old manifest is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.parquet"]  # no temporary file left


def test_remove_duplicates_of_a_still_shot_stays_linear() -> None:
    """20,000 frames with one hash across splits: no quadratic pair table (that took 19 GB)."""
    n = 20_000
    df = pd.DataFrame({"crop_path": [f"c{i}.jpg" for i in range(n)], "phash": np.full(n, 12345, np.int64),
                       "split": np.where(np.arange(n) % 10 == 0, "test", "train")})
    kept, report = remove_cross_split_duplicates(df)
    assert set(kept["split"]) == {"test"} and len(kept) == n // 10
    assert len(report) == n - n // 10 and (report["duplicate_split"] == "test").all()
    assert (report["distance"] == 0).all()
