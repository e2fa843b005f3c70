"""`dfd prepare` on generated trees: crops + manifest, failures counted, splits, resume after a kill."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepfake_detection.cli import main
from deepfake_detection.data.manifest import read_manifest
from deepfake_detection.data.types import MANIFEST_COLUMNS
from deepfake_detection.io.video import frame_indices
from dfd_testkit.synthetic import moving_face_clip, scene, write_image


def _dataset(root: Path, n_per_class: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for label in ("real", "deepfake"):
        for i in range(n_per_class):
            image = scene(rng, face=i, scale=rng.uniform(0.5, 0.9))
            write_image(root / label / f"{label}_{i:03d}.jpg", image)
    write_image(root / "real" / "empty_scene.jpg", scene(rng, face=None))
    (root / "real" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(2000))
    (root / "deepfake" / "broken.mp4").write_bytes(os.urandom(5000))
    moving_face_clip(root / "deepfake" / "clip.mp4", rng, n=40)
    return root


def test_frame_indices() -> None:
    assert frame_indices(100, count=5) == [0, 25, 50, 74, 99]
    assert frame_indices(3, count=32) == [0, 1, 2]
    assert frame_indices(10, stride=4) == [0, 4, 8]
    assert frame_indices(0) == []


def test_prepare_folder_layout(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "data")
    out = tmp_path / "prepared"
    code = main(["prepare", str(root), "--out", str(out), "--frames", "6", "--workers", "2", "--no-progress",
                 "--no-dedup", "--chunk-size", "4"])
    assert code == 0
    df = read_manifest(out / "manifest.parquet")
    assert tuple(df.columns) == MANIFEST_COLUMNS
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failures"] == 2  # the corrupt JPEG and the broken video: counted, not fatal
    assert {Path(f["path"]).name for f in summary["failed_files"]} == {"corrupt.jpg", "broken.mp4"}
    assert summary["no_face_sources"] == 1
    assert (out / "summary.png").stat().st_size > 1000
    clip = df[df.source_path.str.endswith("clip.mp4")]
    assert len(clip) >= 5 and clip.frame_index.nunique() == len(clip)  # sampled frames, one face each
    assert len(df) == 16 + len(clip)
    assert set(df.label) == {0, 1} and set(df.split) <= {"train", "val", "test"}
    for row in df.itertuples():
        crop = out / row.crop_path
        assert crop.exists() and len(Path(row.crop_path).parts) == 3  # crops/aa/name.jpg
        assert row.crop_size == 256 and len(row.landmarks) == 10
        assert all(0 <= v <= 256 for v in row.landmarks)
    assert df.groupby("group").split.nunique().max() == 1  # no identity in two splits


def _worker_pids(parent: int) -> list[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


@pytest.mark.slow  # kills a worker process mid-run
def test_resume_after_killed_worker_gives_same_manifest(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "data", n_per_class=30, seed=1)
    args = ["prepare", str(root), "--frames", "4", "--workers", "2", "--no-progress", "--chunk-size", "2"]
    reference = tmp_path / "reference"
    assert main([*args, "--out", str(reference)]) == 0

    out = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "deepfake_detection.cli", *args, "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    parts = out / "parts"
    while time.time() < deadline and not (parts.exists() and len(list(parts.glob("*.parquet"))) >= 3):
        time.sleep(0.05)
    workers = [pid for pid in _worker_pids(proc.pid)]
    assert workers, "no worker process found"
    for pid in workers:  # kill the workers mid-run (the resource tracker may be among them: harmless)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "resume" in err
    assert not (out / "manifest.parquet").exists()
    finished_before = len(list(parts.glob("*.parquet")))
    assert 0 < finished_before < 31  # some, not all, chunks were done

    assert main([*args, "--out", str(out)]) == 0
    a = read_manifest(reference / "manifest.parquet")
    b = read_manifest(out / "manifest.parquet")
    pd.testing.assert_frame_equal(a.drop(columns=["source_path"]), b.drop(columns=["source_path"]))


def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "data", n_per_class=2)
    out = tmp_path / "p"
    assert main(["prepare", str(root), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    assert main(["prepare", str(root), "--out", str(out), "--workers", "1", "--crop-size", "128",
                 "--no-progress"]) == 1


def test_cropped_mode(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    root = tmp_path / "crops"
    for label in ("real", "fake"):
        for i in range(6):
            write_image(root / label / f"{i}.jpg", rng.integers(0, 255, (300, 240, 3), dtype=np.uint8))
    out = tmp_path / "p"
    args = ["prepare", str(root), "--out", str(out), "--cropped", "--workers", "1", "--no-progress"]
    assert main(args) == 0
    df = read_manifest(out / "manifest.parquet")
    assert len(df) == 12 and df.landmarks.isna().all() and (df.det_score == 1.0).all()
    # A second run in the same process after the output folder was removed writes every crop again.
    import shutil

    shutil.rmtree(out)
    assert main(args) == 0
    again = read_manifest(out / "manifest.parquet")
    assert len(again) == 12 and all((out / p).is_file() for p in again.crop_path)


def test_landmarks68_stored_in_crop_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    root = tmp_path / "data"
    for label in ("real", "fake"):
        write_image(root / label / "a.jpg", scene(rng, face=0, scale=0.8))
    out = tmp_path / "p"
    assert main(["prepare", str(root), "--out", str(out), "--landmarks68", "--workers", "1",
                 "--no-progress"]) == 0
    df = read_manifest(out / "manifest.parquet")
    for row in df.itertuples():
        points = np.asarray(row.landmarks68).reshape(68, 2)
        five = np.asarray(row.landmarks).reshape(5, 2)
        assert ((points > -20) & (points < 276)).all()
        chin_y, eyes_y = points[8, 1], five[:2, 1].mean()
        assert chin_y > five[3:, 1].mean() > eyes_y  # chin below the mouth, below the eyes
        # dlib's eye centres (points 36-41, 42-47) agree with RetinaFace's within a few pixels
        left_eye = points[36:42].mean(axis=0)
        assert np.linalg.norm(left_eye - five[0]) < 12
