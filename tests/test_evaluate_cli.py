"""`dfd evaluate` and `dfd compare` end to end on a generated prepared dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepfake_detection.cli import main
from dfd_testkit.synthetic import write_image


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A --cropped dataset: fakes have a bright centre square, so a model can be right or wrong."""
    root = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(0)
    for label in ("real", "fake"):
        for i in range(16):
            image = rng.integers(0, 160, (96, 96, 3), dtype=np.uint8)
            if label == "fake":
                image[32:64, 32:64] = 250
            write_image(root / label / f"{label}{i}.jpg", image)
    out = tmp_path_factory.mktemp("prepared")
    assert main(["prepare", str(root), "--out", str(out), "--cropped", "--crop-size", "96", "--workers", "1",
                 "--ratios", "0.5", "0.25", "0.25", "--no-progress", "--no-dedup"]) == 0
    return out / "manifest.parquet"


def test_evaluate_writes_report(prepared: Path, tiny_onnx_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    # --cropped sources hold no detectable face: the stored-crop mode
    args = ["evaluate", str(tiny_onnx_model), str(prepared), "--out", str(out), "--bootstrap", "50",
            "--mode", "crops"]
    assert main(args) == 0
    results = json.loads((out / "metrics.json").read_text())
    assert results["data"]["split"] == "test" and results["data"]["n_frames"] >= 4
    assert results["threshold"] == pytest.approx(0.5)  # from the model's spec, never fitted here
    frame = results["frame"]["at_threshold"]
    assert 0 <= frame["auc"] <= 1 and results["frame"]["auc_ci"] is not None
    assert set(results["robustness"]["perturbations"]) >= {"jpeg50", "blur2", "down0.5", "noise"}
    jpeg = results["robustness"]["perturbations"]["jpeg30"]
    assert {"accuracy", "f1", "auc", "eer", "ece"} <= set(jpeg["metrics"])
    for name in ("roc", "reliability", "confusion", "score_hist"):
        assert Path(results["plots"][name]).stat().st_size > 5000
    assert "Evaluation of test-cnn" in (out / "report.md").read_text()
    assert (out / "report.html").exists() and (out / "scores.csv").exists()


def test_evaluate_picks_its_perturbations(prepared: Path, tiny_onnx_model: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """--robustness replaces the mode's sweep (here with the H.264 one); an unknown name is refused
    before any work."""
    out = tmp_path / "eval"
    assert main(["evaluate", str(tiny_onnx_model), str(prepared), "--out", str(out), "--bootstrap", "0",
                 "--mode", "crops", "--robustness", "h264_crf40,jpeg50"]) == 0
    rows = json.loads((out / "metrics.json").read_text())["robustness"]["perturbations"]
    assert set(rows) == {"h264_crf40", "jpeg50"} and 0 <= rows["h264_crf40"]["auc"] <= 1
    assert main(["evaluate", str(tiny_onnx_model), str(prepared), "--out", str(tmp_path / "bad"),
                 "--mode", "crops", "--robustness", "jpeg50,h265"]) == 2
    assert "unknown perturbation(s) ['h265']" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_evaluate_takes_a_bundled_models_name(prepared: Path, tmp_path: Path) -> None:
    """`dfd evaluate default ...`, as `--model default` elsewhere: the report names the bundled file
    (the name once reached the report only to crash on it, after all the scoring)."""
    from deepfake_detection.infer.bundled import default_model_path

    out = tmp_path / "eval"
    assert main(["evaluate", "default", str(prepared), "--out", str(out), "--bootstrap", "0",
                 "--no-robustness", "--mode", "crops"]) == 0
    model = json.loads((out / "metrics.json").read_text())["model"]
    assert model["file"] == str(default_model_path()) and model["file_size_mb"] > 1


def test_evaluate_refuses_single_class_split(prepared: Path, tiny_onnx_model: Path, tmp_path: Path) -> None:
    assert main(["evaluate", str(tiny_onnx_model), str(prepared), "--split", "nosuch", "--out",
                 str(tmp_path / "e")]) == 1


def test_compare_two_runs(prepared: Path, tiny_onnx_model: Path, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["evaluate", str(tiny_onnx_model), str(prepared), "--out", str(out), "--bootstrap", "0",
                     "--no-robustness", "--mode", "crops"]) == 0
        runs.append(str(out))
    assert main(["compare", *runs, "--out", str(tmp_path / "cmp")]) == 0
    rows = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    rows = rows["runs"] if isinstance(rows, dict) else rows
    assert len(rows) == 2 and rows[0]["latency_ms_b1"] > 0 and rows[0]["params"] > 100_000
    assert "test-cnn" in (tmp_path / "cmp" / "comparison.md").read_text()


def test_evaluate_a_folder_runs_the_full_pipeline(tiny_onnx_model: Path, tmp_path: Path) -> None:
    """A real/ + fake/ folder: faces detected, cropped and scored image by image."""
    from dfd_testkit.synthetic import scene

    rng = np.random.default_rng(1)
    for label in ("real", "fake"):
        for i in range(4):
            write_image(tmp_path / "folder" / label / f"{i}.jpg", scene(rng, face=i, scale=0.7))
    write_image(tmp_path / "folder" / "real" / "no_face.jpg", scene(rng, face=None))
    out = tmp_path / "eval"
    assert main(["evaluate", str(tiny_onnx_model), str(tmp_path / "folder"), "--out", str(out),
                 "--bootstrap", "20"]) == 0
    results = json.loads((out / "metrics.json").read_text())
    assert results["data"]["n_frames"] == 8  # the face-free image is not scorable, the rest are
    assert results["frame"]["at_threshold"]["auc"] is not None
