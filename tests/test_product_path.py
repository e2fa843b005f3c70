"""The crop protocol travels from `dfd prepare` through training into the model, and evaluation and
calibration measure the product's own path (decode, detect, crop, classify) on the source files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from deepfake_detection.cli import main
from deepfake_detection.data.manifest import read_manifest, write_manifest
from deepfake_detection.data.prepare import pad_image
from deepfake_detection.errors import DatasetError, DFDError
from deepfake_detection.evaluate.calibration import calibrated, choose_threshold, fit_calibration
from deepfake_detection.evaluate.product_path import jpeg_perturbation, raw_logits, score_sources
from deepfake_detection.models.paths import sha256_file
from deepfake_detection.train.data import crop_protocol_of, load_manifests
from dfd_testkit.synthetic import moving_face_clip, scene, write_image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # two OpenMP threads on a shared 2-core machine spin against each other
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def faces_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """real/ and deepfake/ scenes with a face each (the fakes' faces brightened: learnable), a clip of
    each class, and one image without a face."""
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    for label in ("real", "deepfake"):
        for i in range(8):
            image = scene(rng, face=i, scale=rng.uniform(0.5, 0.8))
            if label == "deepfake":
                image = cv2.convertScaleAbs(image, alpha=1.0, beta=60)
            write_image(root / label / f"{label}_{i}.jpg", image)
        moving_face_clip(root / label / f"{label}_clip.mp4", rng, n=24)
    write_image(root / "real" / "no_face.jpg", scene(rng, face=None))
    return root


@pytest.fixture(scope="module")
def prepared(faces_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    assert main(["prepare", str(faces_dataset), "--out", str(out), "--crop-size", "64", "--crop-scale", "1.4",
                 "--frames", "4", "--workers", "1", "--no-progress", "--no-dedup",
                 "--ratios", "0.5", "0.25", "0.25"]) == 0
    return out / "manifest.parquet"


def test_prepare_records_the_crop_protocol(prepared: Path) -> None:
    df = read_manifest(prepared)
    assert set(df["crop_scale"]) == {1.4} and set(df["crop_align"]) == {False}
    assert set(df["crop_size"]) == {64} and set(df["crop_protocol"]) == {1}
    assert df["crop_detector"].nunique() == 1 and df["crop_detector"].iloc[0] in ("retinaface", "haar")
    protocol, size = crop_protocol_of(df, where="test")
    expected = (1.4, False, df["crop_detector"][0], 64)
    assert (protocol.scale, protocol.align, protocol.detector, size) == expected


def test_mixed_crop_protocols_are_refused(prepared: Path, tmp_path: Path) -> None:
    other = read_manifest(prepared)
    other["crop_scale"] = 1.2
    second = write_manifest(other, tmp_path / "manifest.parquet")
    with pytest.raises(DatasetError, match="different crop protocols"):
        load_manifests([prepared, second])
    other["crop_scale"], other["crop_detector"] = 1.4, "haar" if other["crop_detector"][0] != "haar" else "x"
    with pytest.raises(DatasetError, match="crop_detector"):
        load_manifests([prepared, write_manifest(other, tmp_path / "m2.parquet")])


def test_old_manifests_without_protocol_columns_still_read(prepared: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(prepared).drop_columns(["crop_scale", "crop_align", "crop_detector"])
    pq.write_table(table, tmp_path / "old.parquet")
    df = read_manifest(tmp_path / "old.parquet")
    assert set(df["crop_scale"]) == {1.3} and set(df["crop_detector"]) == {"unknown"}
    protocol, _ = crop_protocol_of(df, where="old")
    assert protocol.detector == "retinaface"  # unknown: the default, compatible with any one detector


def _train(manifest: Path, out: Path) -> Path:
    cfg = {
        "data": {"manifests": [str(manifest)], "sbi": False, "num_workers": 0, "augment": None},
        "model": {"arch": "custom_cnn", "input_size": 64, "drop_rate": 0.0},
        "optim": {"lr": 3e-3, "weight_decay": 0.0}, "schedule": {"name": "constant"},
        "epochs": 1, "batch_size": 8, "device": "cpu", "out": str(out), "tensorboard": False,
    }
    (out.parent / "cfg.yaml").write_text(json.dumps(cfg))
    assert main(["train", "--config", str(out.parent / "cfg.yaml")]) == 0
    return out


def test_prepare_train_predictor_chain_uses_the_same_crops(prepared: Path, tmp_path: Path) -> None:
    """The trained model's spec carries the manifest's crop protocol, so Predictor cuts exactly the
    crops training read (up to the stored JPEG's compression), and its threshold and temperature
    were fitted on the validation SOURCE files through the product path."""
    from deepfake_detection.faces import crop_face
    from deepfake_detection.infer.predictor import Predictor
    from deepfake_detection.io.images import load_image

    run = _train(prepared, tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["calibrated_on"].startswith("product path")
    predictor = Predictor.load(run / "model.onnx")
    df = read_manifest(prepared)
    assert predictor.spec.crop.scale == 1.4 and predictor.spec.crop.detector == df["crop_detector"][0]
    assert predictor.spec.input_size == 64
    assert predictor.detector_name == df["crop_detector"][0]  # the detector the crops were made with
    stills = df[df["source_path"].str.endswith(".jpg")].head(4)
    for row in stills.itertuples():
        prepared_image = predictor.prepare(row.source_path, row.source_path)
        assert prepared_image.faces, row.source_path
        np.testing.assert_allclose(prepared_image.faces[0].box, row.box, atol=0.2)
        stored = cv2.imread(str(prepared.parent / row.crop_path))
        # Stored crops are JPEG q95 (prepare's default): the served crop, encoded the same way, must
        # decode to the same pixels; any other crop (scale, shift, detector) differs by far more.
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(prepared_image.crops[0], cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, 95])
        diff = np.abs(cv2.imdecode(encoded, cv2.IMREAD_COLOR).astype(int) - stored.astype(int)).mean()
        assert ok and diff < 0.5, f"{row.source_path}: served crop differs from the stored one by {diff:.2f}"
        other = crop_face(load_image(row.source_path), prepared_image.faces[0], predictor.spec.input_size,
                          replace(predictor.spec.crop, scale=1.3))
        assert np.abs(other.astype(int) - cv2.cvtColor(stored, cv2.COLOR_BGR2RGB)).mean() > 5


def test_calibrate_refits_on_the_product_path_and_switches_mirror_tta(
        prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`dfd calibrate` without changes reproduces the fit `dfd train` made (same validation files,
    same path); with --tta hflip the served logit is the mean of the crop's and its mirror's."""
    from deepfake_detection.infer.predictor import Predictor
    from deepfake_detection.models.files import load_model_file

    run = _train(prepared, tmp_path / "run")
    trained = Predictor.load(run / "model.onnx").spec
    assert main(["calibrate", str(run / "model.safetensors"), str(prepared), "--out", str(tmp_path / "same"),
                 "--strategy", "youden"]) == 0  # the training config's default rule
    same = Predictor.load(tmp_path / "same" / "model.onnx").spec
    assert same.temperature == pytest.approx(trained.temperature, rel=1e-4)
    assert same.bias == pytest.approx(trained.bias, abs=1e-4) and trained.bias != 0.0  # Platt, the default
    assert same.threshold == pytest.approx(trained.threshold, rel=1e-4) and not same.tta_hflip

    assert main(["calibrate", str(run / "model.safetensors"), str(prepared), "--out", str(tmp_path / "tta"),
                 "--tta", "hflip"]) == 0
    assert "mirror TTA on" in capsys.readouterr().out
    predictor = Predictor.load(tmp_path / "tta" / "model.onnx")
    spec = predictor.spec
    assert spec.tta_hflip and load_model_file(tmp_path / "tta" / "model.safetensors")[1] == spec
    model, _ = load_model_file(run / "model.safetensors")
    crop = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    crop[:, :20] = 255  # not mirror-symmetric: the two logits differ
    from deepfake_detection.infer.preprocess import to_batch

    with torch.no_grad():
        z = model.eval()(torch.from_numpy(to_batch([crop, crop[:, ::-1].copy()], spec))).numpy().ravel()
    assert abs(z[0] - z[1]) > 1e-4
    expected = 1 / (1 + np.exp(-(z.mean() / spec.temperature + spec.bias)))
    assert predictor.probabilities([crop])[0] == pytest.approx(expected, abs=1e-5)
    assert not list((tmp_path / "tta").glob(".*"))  # the scratch model is gone
    fit = json.loads((tmp_path / "tta" / "calibration.json").read_text())
    assert fit["tta_hflip"] and fit["split"] == "val" and fit["threshold"] == spec.threshold
    assert fit["calibration"] == "platt" and fit["bias"] == spec.bias

    assert main(["calibrate", str(run / "model.safetensors"), str(prepared), "--out", str(tmp_path / "temp"),
                 "--calibration", "temperature"]) == 0
    assert Predictor.load(tmp_path / "temp" / "model.onnx").spec.bias == 0.0  # temperature scaling alone

    # --jpeg-quality 50: every validation frame also counts as its JPEG 50 copy, and the fit is the
    # one made by hand on that pool (not the clean-only fit).
    assert main(["calibrate", str(run / "model.safetensors"), str(prepared), "--out", str(tmp_path / "jpeg"),
                 "--jpeg-quality", "50", "--strategy", "youden"]) == 0
    assert "with JPEG 50 copies" in capsys.readouterr().out
    pooled = json.loads((tmp_path / "jpeg" / "calibration.json").read_text())
    val = read_manifest(prepared)
    scores = score_sources(Predictor.load(run / "model.onnx"), val[val["split"] == "val"], frames=8,
                           perturbations=("jpeg50",))
    seen = scores.perturbed["jpeg50"] > 0
    labels = np.concatenate([scores.frames["label"], scores.frames["label"][seen]])
    logits = raw_logits(np.concatenate([scores.frames["score"], scores.perturbed["jpeg50"][seen]]),
                        trained.temperature, trained.bias)
    temperature, bias = fit_calibration(logits, labels, "platt")
    assert pooled["jpeg_quality"] == 50 and pooled["frames"] == len(labels) > len(scores.frames)
    assert (pooled["temperature"], pooled["bias"]) == pytest.approx((temperature, bias), rel=1e-4, abs=1e-4)
    assert pooled["threshold"] == pytest.approx(
        choose_threshold(calibrated(logits, temperature, bias), labels, strategy="youden"), rel=1e-4)
    assert (pooled["temperature"], pooled["bias"]) != pytest.approx((same.temperature, same.bias), rel=1e-3)
    assert json.loads((tmp_path / "same" / "calibration.json").read_text())["jpeg_quality"] is None
    with pytest.raises(SystemExit):  # only the robustness table's qualities
        main(["calibrate", str(run / "model.safetensors"), str(prepared), "--out", str(tmp_path / "q"),
              "--jpeg-quality", "40"])
    with pytest.raises(DFDError, match="not offered"):
        jpeg_perturbation(40)

    # scripts/ship_model.py --calibrated bundles that refit with the run's config, summary and the
    # evaluation of exactly that model (a mismatched evaluation is refused).
    # As v6's did, the run names the bundled file it replaces as an ingredient: its hash, taken
    # before the overwrite, is what the record keeps.
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / "metrics.json").write_text(json.dumps({"threshold": spec.threshold}))
    old_bundled = tmp_path / "b" / "default.safetensors"
    old_bundled.parent.mkdir()
    shutil.copyfile(run / "model.safetensors", old_bundled)
    old_bundled.write_bytes(old_bundled.read_bytes() + b" ")  # another file than the shipped one
    summary = json.loads((run / "summary.json").read_text())
    summary["mean_of"] = [str(old_bundled), str(tmp_path / "gone.safetensors")]
    (run / "summary.json").write_text(json.dumps(summary))
    old_hash = sha256_file(old_bundled)
    ship = [sys.executable, str(REPO / "scripts/ship_model.py"), str(run), "--name", "test-v3",
            "--evaluation", str(evaluation), "--calibrated", str(tmp_path / "tta"),
            "--out", str(tmp_path / "b")]
    assert subprocess.run(ship, capture_output=True, text=True).returncode == 0
    shipped = Predictor.load(tmp_path / "b" / "default.onnx").spec
    assert shipped == replace(spec, name="test-v3")
    metrics = json.loads((tmp_path / "b" / "default.metrics.json").read_text())
    assert metrics["training"]["recalibration"]["tta_hflip"] and metrics["training"]["tta_hflip"]
    assert metrics["training"]["ancestors"] == {str(old_bundled): old_hash,
                                                str(tmp_path / "gone.safetensors"): "missing"}
    assert sha256_file(old_bundled) != old_hash  # it was overwritten after hashing
    (evaluation / "metrics.json").write_text(json.dumps({"threshold": trained.threshold}))
    refused = subprocess.run(ship, capture_output=True, text=True)
    assert refused.returncode != 0 and "evaluated another model" in refused.stderr

    assert main(["calibrate", str(run / "model.safetensors"), str(prepared), "--out", str(run)]) == 1
    assert main(["calibrate", str(run / "model.onnx"), str(prepared), "--out", str(tmp_path / "x")]) == 1
    assert "another folder" in capsys.readouterr().err


def test_evaluate_runs_the_product_path_by_default(prepared: Path, tiny_onnx_model: Path,
                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    assert main(["evaluate", str(tiny_onnx_model), str(prepared), "--split", "all", "--out", str(out),
                 "--bootstrap", "20", "--frames", "3", "--video-frames", "6", "--no-progress"]) == 0
    results = json.loads((out / "metrics.json").read_text())
    data = results["data"]
    assert data["mode"].startswith("product path")
    assert data["n_video_verdicts"] == 2 and results["video"] is not None  # dfd detect's verdicts
    assert data["n_sources"] > 2 and "\nvideos 2: AUC" in capsys.readouterr().out  # not every source
    assert data["no_face_sources"] == 0  # the face-free image has no crop, so it is not in the manifest
    assert set(results["robustness"]["perturbations"]) == {"jpeg50", "blur1", "down0.5"}
    scores = pd.read_csv(out / "scores.csv")
    clips = scores[scores["source_path"].str.endswith(".mp4")]
    assert len(clips) >= 4 and clips.groupby("source_id")["frame_index"].nunique().min() >= 2
    assert scores["blurry"].dtype == bool  # whether each frame's result carried the blurry-face warning
    crops = tmp_path / "crops"
    assert main(["evaluate", str(tiny_onnx_model), str(prepared), "--split", "all", "--out", str(crops),
                 "--mode", "crops", "--bootstrap", "0", "--no-robustness"]) == 0
    assert "stored crops" in json.loads((crops / "metrics.json").read_text())["data"]["mode"]


def test_pad_gives_tight_crops_a_margin(tmp_path: Path, astronaut: np.ndarray) -> None:
    padded = pad_image(astronaut, 0.25)
    assert padded.shape == (768, 768, 3) and padded[:128].max() == 0 and padded[:, :128].max() == 0
    assert pad_image(astronaut, 0.0) is astronaut


def test_csv_listing_takes_a_dataset_column(tmp_path: Path) -> None:
    from deepfake_detection.data.layouts import iter_sources

    write_image(tmp_path / "a.jpg", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "list.csv").write_text("path,label,dataset\na.jpg,real,utk_real\na.jpg,real,bad name\n")
    failures: list[tuple[str, str]] = []
    items = list(iter_sources([tmp_path / "list.csv"], on_failure=lambda w, y: failures.append((w, y))))
    assert [i.dataset for i in items] == ["utk_real"]
    assert len(failures) == 1 and "dataset" in failures[0][1]


def test_predictor_uses_the_detector_the_model_was_trained_on(tmp_path: Path) -> None:
    from deepfake_detection.export.onnx import export_onnx
    from deepfake_detection.infer.predictor import Predictor
    from deepfake_detection.models.registry import create_model, default_spec
    from deepfake_detection.models.spec import CropProtocol

    spec = replace(default_spec("custom_cnn", name="haar-trained"), crop=CropProtocol(detector="haar"))
    path = export_onnx(create_model("custom_cnn").eval(), spec, tmp_path / "haar.onnx")
    assert Predictor.load(path).detector_name == "haar"
    override = Predictor.load(path, detector="retinaface")  # an explicit choice still wins
    assert override.detector_name == "retinaface"


def test_jpeg_path_diagnosis_scores_the_product_path(prepared: Path, tiny_onnx_model: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """scripts/diagnose_jpeg_path.py: its "direct, clean" variant is exactly what dfd detect scores."""
    from deepfake_detection.evaluate.metrics import roc_auc
    from deepfake_detection.infer.predictor import Predictor
    from dfd_testkit.scripts import load_script

    df = read_manifest(prepared)
    stills = df[~df["source_path"].str.endswith(".mp4")].drop_duplicates("source_path")
    dataset = str(stills["dataset"].iloc[0])
    monkeypatch.setattr(sys, "argv", ["diagnose_jpeg_path.py", str(tiny_onnx_model), str(prepared),
                                      "--split", "all", "--dataset", dataset])
    assert load_script("diagnose_jpeg_path").main() == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{len(stills)} {dataset} sources") and len(lines) == 7
    aucs = {line.rsplit(" AUC ", 1)[0].strip(): float(line.rsplit(" AUC ", 1)[1]) for line in lines[1:]}
    predictor = Predictor.load(tiny_onnx_model)
    detected = [predictor.predict(p) for p in stills["source_path"]]
    expected = roc_auc(stills["label"].to_numpy(), [r.fake_probability for r in detected])
    assert aucs["direct, clean (the product path)"] == pytest.approx(expected, abs=0.0015)
