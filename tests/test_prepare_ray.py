"""`dfd prepare --ray-address`: the chunks run as Ray tasks (here a 2-CPU runtime joined by address from
another process) and give the same crops and manifest as the default local processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from deepfake_detection.cli import main
from deepfake_detection.data.manifest import read_manifest
from test_prepare import _dataset

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a Ray runtime


def test_ray_tasks_give_the_manifest_of_local_processes(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "data", n_per_class=4)
    args = ["--frames", "4", "--no-progress", "--chunk-size", "3"]
    assert main(["prepare", str(root), "--out", str(tmp_path / "local"), "--workers", "2", *args]) == 0
    context = ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "deepfake_detection.cli", "prepare", str(root), "--out",
               str(tmp_path / "ray"), "--ray-address", context.address_info["address"], *args]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        # The work ran in this runtime's workers (Ray marks each task in its worker's log).
        logs = Path(context.address_info["session_dir"]) / "logs"
        worker_logs = [f.read_text(errors="replace") for f in logs.glob("worker-*.out")]
        assert any(":task_name:_ray_chunk" in text for text in worker_logs)
    finally:
        ray.shutdown()
    local, on_ray = read_manifest(tmp_path / "local" / "manifest.parquet"), read_manifest(
        tmp_path / "ray" / "manifest.parquet")
    assert len(local) >= 8
    pd.testing.assert_frame_equal(local, on_ray)
    for name in ("failures", "no_face_sources", "sources"):
        assert (json.loads((tmp_path / "local" / "summary.json").read_text())[name]
                == json.loads((tmp_path / "ray" / "summary.json").read_text())[name])
    for crop in local["crop_path"]:
        assert (tmp_path / "ray" / crop).read_bytes() == (tmp_path / "local" / crop).read_bytes()


def test_ray_address_without_ray_says_how_to_install(request: pytest.FixtureRequest, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    root = _dataset(tmp_path / "data", n_per_class=1)
    request.getfixturevalue("hide_ray")  # after the dataset is made: only the command runs without Ray
    assert main(["prepare", str(root), "--out", str(tmp_path / "o"), "--ray-address", "local",
                 "--no-progress"]) == 2
    assert "pip install 'deepfake-detection[distributed]'" in capsys.readouterr().err
