"""JPEG consistency training (config.ConsistencyConfig): the second view, the loss and the wiring."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from deepfake_detection.data.augment import build_eval_transform
from deepfake_detection.evaluate.robustness import jpeg
from deepfake_detection.infer.preprocess import to_batch
from deepfake_detection.models.spec import ModelSpec
from deepfake_detection.train import ConfigError, train
from deepfake_detection.train.data import CropDataset, load_manifests
from deepfake_detection.train.loop import bce_loss, consistency_losses
from test_train import cfg_of, make_manifest


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_manifest(tmp_path_factory.mktemp("crops"))


def test_consistency_is_off_by_default_and_checks_its_quality_range(tmp_path: Path, manifest: Path) -> None:
    cfg = cfg_of(manifest, tmp_path)
    assert cfg.consistency.weight == 0.0 and cfg.consistency.jpeg_quality == (30, 80)
    assert not cfg.consistency.detach_clean
    for bad in ("consistency.jpeg_quality=[80,30]", "consistency.jpeg_quality=[0,50]",
                "consistency.weight=-1", "consistency.strength=1"):
        with pytest.raises(ConfigError, match="consistency"):
            cfg_of(manifest, tmp_path, bad)


def test_dataset_adds_the_jpeg_view_of_the_transformed_crop_only_when_asked(manifest: Path) -> None:
    rows = load_manifests([manifest])
    spec = ModelSpec(arch="custom_cnn", input_size=32)
    tf = build_eval_transform(32)
    plain = CropDataset(rows, spec, tf)
    paired = CropDataset(rows, spec, tf, jpeg_pair=(20, 20))
    assert "image_jpeg" not in plain[(0, 3)]
    sample = paired[(0, 3)]
    assert torch.equal(sample["image"], plain[(0, 3)]["image"])  # the first view is untouched
    crop = np.ascontiguousarray(tf(image=paired._read(3))["image"])
    expected = to_batch([jpeg(crop, 20)], spec)[0]
    np.testing.assert_allclose(sample["image_jpeg"].numpy(), expected, atol=1e-6)
    assert not torch.equal(sample["image_jpeg"], sample["image"])
    ranged = CropDataset(rows, spec, tf, jpeg_pair=(30, 80))
    # seeded per (epoch, index): the same key gives the same quality and view
    assert torch.equal(ranged[(1, 5)]["image_jpeg"], ranged[(1, 5)]["image_jpeg"])


def test_h264_view_and_its_config(tmp_path: Path, manifest: Path) -> None:
    """consistency.codec=h264: the second view is one H.264 frame of the transformed crop at a CRF drawn
    from consistency.h264_crf (what setup hands the dataset), not a JPEG copy."""
    from deepfake_detection.evaluate.robustness import h264

    rows = load_manifests([manifest])
    spec = ModelSpec(arch="custom_cnn", input_size=32)
    tf = build_eval_transform(32)
    dataset = CropDataset(rows, spec, tf, jpeg_pair=(40, 40), pair_codec="h264")
    coded = dataset[(0, 3)]
    crop = np.ascontiguousarray(tf(image=dataset._read(3))["image"])
    np.testing.assert_allclose(coded["image_jpeg"].numpy(), to_batch([h264(crop, 40)], spec)[0], atol=1e-6)
    assert not np.allclose(coded["image_jpeg"].numpy(), to_batch([jpeg(crop, 40)], spec)[0], atol=1e-3)
    from deepfake_detection.models.registry import default_spec
    from deepfake_detection.train.distributed import DistInfo
    from deepfake_detection.train.setup import build_data

    cfg = cfg_of(manifest, tmp_path, "consistency.codec=h264", "consistency.weight=0.5", "data.num_workers=0")
    data = build_data(cfg, default_spec("custom_cnn", input_size=32), DistInfo(1, 0, 0, torch.device("cpu")))
    assert (data.train_set.pair_codec, data.train_set.jpeg_pair) == ("h264", (30, 44))  # the CRF range
    for bad in ("consistency.codec=h265", "consistency.h264_crf=[30,60]"):
        with pytest.raises(ConfigError, match="consistency"):
            cfg_of(manifest, tmp_path, bad)


def test_consistency_loss_is_the_mean_bce_plus_the_weighted_squared_logit_gap() -> None:
    y = torch.tensor([0.0, 1.0, 1.0])
    clean = torch.tensor([-1.0, 2.0, 0.5])
    same = consistency_losses(torch.cat([clean, clean]), y, weight=3.0)
    torch.testing.assert_close(same, bce_loss(clean, y))  # equal views: plain BCE, whatever the weight
    compressed = torch.tensor([-0.5, 0.0, 0.5])
    out = consistency_losses(torch.cat([clean, compressed]), y, weight=0.5)
    bce = (bce_loss(clean, y) + bce_loss(compressed, y)) / 2
    torch.testing.assert_close(out, bce + 0.5 * (clean - compressed) ** 2)


def test_detached_clean_view_gets_no_gradient_from_the_gap() -> None:
    """detach_clean: the same loss value, but the gap's gradient reaches only the compressed logit."""
    y = torch.tensor([0.0, 1.0])
    grads = {}
    for detach in (False, True):
        logits = torch.tensor([-1.0, 2.0, 0.5, 0.0], requires_grad=True)
        loss = consistency_losses(logits, y, weight=0.5, detach_clean=detach)
        loss.sum().backward()
        grads[detach] = logits.grad
        torch.testing.assert_close(loss.detach(), consistency_losses(logits.detach(), y, weight=0.5))
    clean_bce_grad = torch.sigmoid(torch.tensor([-1.0, 2.0])) - y  # d BCE / d logit, halved below
    torch.testing.assert_close(grads[True][:2], clean_bce_grad / 2)  # the BCE alone
    torch.testing.assert_close(grads[True][2:], grads[False][2:])  # the compressed view: unchanged
    assert not torch.allclose(grads[False][:2], grads[True][:2])


def _train_loss(run: Path) -> float:
    return float(next(csv.DictReader((run / "metrics.csv").open()))["train_loss"])


def test_training_with_consistency_optimises_the_paired_loss(tmp_path: Path, manifest: Path) -> None:
    """The trainer feeds both views and the weighted gap: a run with a heavy weight and very coarse
    JPEG logs a larger training loss than the same run without (identical otherwise)."""
    torch.set_num_threads(1)
    off = train(cfg_of(manifest, tmp_path / "off", "epochs=1"))
    on = train(cfg_of(manifest, tmp_path / "on", "epochs=1", "consistency.weight=50",
                      "consistency.jpeg_quality=[1,1]"))
    assert (on / "model.onnx").is_file()
    assert _train_loss(on) > _train_loss(off) + 0.01


def test_trainer_hands_detach_clean_to_the_step(tmp_path: Path, manifest: Path) -> None:
    from deepfake_detection.train.distributed import DistInfo
    from deepfake_detection.train.trainer import Trainer

    info = DistInfo(1, 0, 0, torch.device("cpu"))
    for flag in (False, True):
        cfg = cfg_of(manifest, tmp_path / str(flag), "consistency.weight=0.5", "data.num_workers=0",
                     f"consistency.detach_clean={str(flag).lower()}")
        assert Trainer(cfg, info).ctx.consistency_detach_clean is flag
