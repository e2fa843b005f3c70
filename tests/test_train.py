"""Training: config, data stream, samplers, loop, resume, calibration/export, torchrun (CPU, gloo)."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from deepfake_detection.data.augment import build_eval_transform
from deepfake_detection.data.manifest import write_manifest
from deepfake_detection.data.types import CropRecord
from deepfake_detection.train import ConfigError, load_config, train
from deepfake_detection.train.config import apply_overrides, config_from_dict
from deepfake_detection.train.data import (
    CropDataset,
    OrderSpec,
    ShardedBatchSampler,
    balanced_order,
    load_manifests,
)
from deepfake_detection.train.donors import DonorPicker

SIZE = 64
LANDMARKS = [22.0, 26.0, 42.0, 26.0, 32.0, 36.0, 25.0, 46.0, 39.0, 46.0]  # eyes, nose, mouth corners


def _crop(rng: np.random.Generator, fake: bool) -> np.ndarray:
    """A random texture; fakes get a brighter centre patch (learnable in a few steps)."""
    base = rng.uniform(60, 160, 3)
    img = np.clip(base + rng.normal(0, 20, (SIZE, SIZE, 3)), 0, 255)
    if fake:
        img[20:44, 20:44] += 70
    return np.clip(img, 0, 255).astype(np.uint8)


def make_manifest(root: Path, groups: int = 8, reals: int = 3, fakes: int = 2, val_groups: int = 2) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    records = []
    for g in range(groups):
        for k in range(reals + fakes):
            label = int(k >= reals)
            rel = f"crops/g{g}_{k}.jpg"
            (root / "crops").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / rel), cv2.cvtColor(_crop(rng, bool(label)), cv2.COLOR_RGB2BGR))
            records.append(CropRecord(
                crop_path=rel, source_path=f"/src/g{g}_{k}.jpg", source_id=f"t:g{g}_{k}", frame_index=0,
                face_index=0, box=[0.0, 0.0, 64.0, 64.0], landmarks=list(LANDMARKS), det_score=0.99,
                label=label, method="fake" if label else "real", dataset="test", group=f"g{g}",
                content_hash=f"{g}_{k}", phash=g * 100 + k, crop_size=SIZE, crop_protocol=1,
                split="val" if g >= groups - val_groups else "train"))
    from deepfake_detection.data.manifest import records_to_frame

    return write_manifest(records_to_frame(records), root / "manifest.parquet")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_manifest(tmp_path_factory.mktemp("crops"))


def base_dict(manifest: Path, out: Path) -> dict:
    return {
        "data": {"manifests": [str(manifest)], "sbi": False, "num_workers": 0, "augment": None},
        "model": {"arch": "custom_cnn", "input_size": 32, "drop_rate": 0.0},
        "optim": {"lr": 3e-3, "weight_decay": 0.0},
        "schedule": {"name": "constant"},
        "epochs": 2, "batch_size": 8, "seed": 0, "device": "cpu", "out": str(out), "tensorboard": False,
    }


def cfg_of(manifest: Path, out: Path, *overrides: str):
    return config_from_dict(apply_overrides(base_dict(manifest, out), list(overrides)))


def read_metrics(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "metrics.csv")


@pytest.fixture(autouse=True)
def one_thread():
    # Two OpenMP threads on two cores shared with other jobs spin against each other (70x slower).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- configuration ---------------------------------------------------------------------------------

def test_unknown_key_is_an_error_naming_it(tmp_path: Path, manifest: Path) -> None:
    d = base_dict(manifest, tmp_path / "run")
    d["data"]["sbi_ration"] = 0.3
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError, match=r"data\.sbi_ration: unknown key"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"optim\.lrr"):
        cfg_of(manifest, tmp_path, "optim.lrr=0.1")
    with pytest.raises(ConfigError, match=r"^.*epochs"):
        cfg_of(manifest, tmp_path, "epochs=many")


def test_set_overrides_are_typed(tmp_path: Path, manifest: Path) -> None:
    cfg = cfg_of(manifest, tmp_path, "optim.lr=1.5e-3", "data.sbi=true", "epochs=3", "model.pretrained=hub",
                 "data.manifests=[a.parquet, b.parquet]", "data.augment.jpeg_p=0",
                 "schedule.warmup_epochs=0.5")
    assert cfg.optim.lr == pytest.approx(1.5e-3) and cfg.data.sbi is True and cfg.epochs == 3
    assert cfg.model.pretrained == "hub" and cfg.data.manifests == ["a.parquet", "b.parquet"]
    assert cfg.data.augment is not None and cfg.data.augment.jpeg_p == 0.0
    # The self-blending recipe is configurable, and the datasets training builds use it.
    from deepfake_detection.models.registry import default_spec
    from deepfake_detection.train.distributed import DistInfo
    from deepfake_detection.train.setup import build_data

    blended = cfg_of(manifest, tmp_path, "data.blend.mask_blur=[0.1, 0.2]", "data.blend.rgb_shift_p=0",
                     "data.num_workers=0", "data.identity_blend_ratio=0.5", "data.blend.part_p=0.5",
                     "data.part_cutout_p=0.5", "data.part_cutout_parts=[eyes, nose]")
    assert blended.data.blend.mask_blur == (0.1, 0.2) and blended.data.blend.rgb_shift_p == 0.0
    one_cpu = DistInfo(1, 0, 0, torch.device("cpu"))
    data = build_data(blended, default_spec("custom_cnn", input_size=32), one_cpu)
    assert data.train_set.blend is blended.data.blend
    assert data.val_set.blend == blended.data.blend.model_copy(update={"part_p": 0.0})
    # Blends of another person's face and of face parts are for training; validation stays comparable
    # between runs.
    assert data.train_set.identity_p == 0.5 and data.train_set.donors is not None
    assert data.val_set.identity_p == 0.0 and data.val_set.donors is None
    assert data.train_set.part_cutout_p == 0.5 and data.val_set.part_cutout_p == 0.0
    assert data.train_set.part_cutout_parts == ("eyes", "nose")
    with pytest.raises(ValueError, match="part_cutout_parts"):
        cfg_of(manifest, tmp_path, "data.part_cutout_parts=[chin]")
    resize = data.val_set.transform.transforms[0]  # validation shrinks as training's final resize does
    assert resize.area_for_downscale == "image"
    linear = cfg_of(manifest, tmp_path, "data.augment.resize_filter=linear", "data.num_workers=0")
    linear_data = build_data(linear, default_spec("custom_cnn", input_size=32), one_cpu)
    resize = linear_data.val_set.transform.transforms[0]
    assert resize.area_for_downscale is None
    assert cfg_of(manifest, tmp_path, "model.pretrained=true").model.pretrained is True
    assert cfg_of(manifest, tmp_path, "data.manifests=one.parquet").data.manifests == ["one.parquet"]
    with pytest.raises(ConfigError, match="key.path=value"):
        cfg_of(manifest, tmp_path, "epochs")


def test_cli_usage_errors(tmp_path: Path, manifest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from deepfake_detection.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base_dict(manifest, tmp_path / "run")))
    assert main(["train", "--config", str(path), "--set", "optim.nme=sgd"]) == 2
    assert "optim.nme" in capsys.readouterr().err


def test_shipped_configs_load() -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    default = load_config(root / "default.yaml")
    m, d = default.model, default.data
    assert (m.arch, m.pretrained, m.input_size) == ("efficientnet_lite0", True, 192)
    assert (default.optim.name, default.optim.lr, default.schedule.name) == ("adamw", 3e-4, "cosine")
    assert (default.epochs, default.batch_size, d.sbi, d.use_fakes) == (3, 32, True, True)
    assert d.balance_datasets and not d.class_balance
    assert (default.threshold_strategy, default.calibrate_on) == ("fpr", "product")
    assert load_config(root / "tiny.yaml").model.arch == "custom_cnn"


# ---- data stream and samplers ----------------------------------------------------------------------

def _dataset(manifest: Path, **kw) -> CropDataset:
    from deepfake_detection.models.registry import default_spec

    rows = load_manifests([manifest])
    rows = rows[rows["label"] == 0].reset_index(drop=True)
    return CropDataset(rows, default_spec("custom_cnn", input_size=32), build_eval_transform(32), **kw)


def test_sbi_turns_reals_into_label_one_deterministically(manifest: Path) -> None:
    plain = _dataset(manifest)
    sbi = _dataset(manifest, sbi_p=1.0, seed=3)
    a, b = sbi[(0, 1)], sbi[(0, 1)]
    assert plain[(0, 1)]["label"] == 0 and a["label"] == 1
    assert torch.equal(a["image"], b["image"])  # same (seed, epoch, index): same sample
    assert not torch.equal(a["image"], plain[(0, 1)]["image"])
    assert a["image"].dtype == torch.float32 and a["image"].shape == (3, 32, 32)
    half = _dataset(manifest, sbi_p=0.5)
    labels = [int(half[(e, i)]["label"]) for e in range(4) for i in range(len(half))]
    assert 0.25 < np.mean(labels) < 0.75
    broken = _dataset(manifest, sbi_p=1.0)
    broken.landmarks = [np.zeros(10, np.float32)] * len(broken)  # degenerate: blending refuses
    assert broken[(0, 0)]["label"] == 0 and broken.sbi_failures == 1
    per_row = _dataset(manifest, sbi_p=np.tile([1.0, 0.0], len(plain))[:len(plain)])
    assert [int(per_row[(0, i)]["label"]) for i in range(4)] == [1, 0, 1, 0]


def test_part_cutout_blacks_out_a_part_of_either_class_only_when_asked(manifest: Path) -> None:
    plain = _dataset(manifest, sbi_p=1.0, seed=3)
    cut = _dataset(manifest, sbi_p=1.0, seed=3, part_cutout_p=1.0)
    off = _dataset(manifest, sbi_p=1.0, seed=3, part_cutout_p=0.0)
    for i in range(3):
        a, b = cut[(0, i)], plain[(0, i)]
        assert a["label"] == b["label"] == 1  # the blend is kept, then a part is cut out of it
        assert not torch.equal(a["image"], b["image"])
        assert torch.equal(off[(0, i)]["image"], b["image"])  # p = 0 keeps the exact sample stream
    real, cut_real = _dataset(manifest)[(0, 0)], _dataset(manifest, part_cutout_p=1.0)[(0, 0)]
    assert real["label"] == cut_real["label"] == 0  # an unblended real is cut out too, and stays real
    assert not torch.equal(real["image"], cut_real["image"])
    eyes = _dataset(manifest, part_cutout_p=1.0, part_cutout_parts=("eyes",))[(0, 0)]["image"]
    nose = _dataset(manifest, part_cutout_p=1.0, part_cutout_parts=("nose",))[(0, 0)]["image"]
    assert not torch.equal(eyes, nose)  # the parts asked reach the dataset
    no_landmarks = _dataset(manifest, part_cutout_p=1.0)
    no_landmarks.landmarks = [None] * len(no_landmarks)
    assert torch.equal(no_landmarks[(0, 0)]["image"], _dataset(manifest)[(0, 0)]["image"])


def test_donor_picker_takes_another_person_of_the_same_dataset_with_the_nearest_pose() -> None:
    base = np.array([[30, 30], [50, 30], [40, 40], [32, 50], [48, 50]], float)
    tilted = base @ np.array([[1, 0.3], [-0.3, 1]]).T  # another pose
    landmarks = [base, base * 2 + 5, tilted, base, None, base, base]
    labels = np.array([0, 0, 0, 0, 0, 1, 0])
    groups = ["a", "b", "c", "a", "d", "e", "f"]
    datasets = ["x", "x", "x", "x", "x", "x", "y"]
    picker = DonorPicker(labels, groups, datasets, landmarks, candidates=64)
    rng = np.random.default_rng(0)
    picks = {picker.pick(0, rng) for _ in range(20)}
    # Not its own group (rows 0, 3), not a fake (5), not without landmarks (4), not another dataset (6);
    # the same pose at another size and place (1) beats the tilted face (2).
    assert picks == {1}
    assert picker.pick(6, rng) is None  # alone in its dataset
    assert picker.pick(4, rng) is None  # no landmarks of its own


def test_identity_blends_take_a_donor_only_when_asked(manifest: Path) -> None:
    plain = _dataset(manifest, sbi_p=1.0, seed=3)
    swapped = _dataset(manifest, sbi_p=1.0, seed=3, identity_p=1.0)
    assert plain.donors is None
    reads: list[int] = []
    read = swapped._read
    swapped._read = lambda i: (reads.append(i), read(i))[1]  # type: ignore[method-assign]
    a, b = swapped[(0, 1)], swapped[(0, 1)]
    assert a["label"] == 1 and torch.equal(a["image"], b["image"])
    assert not torch.equal(a["image"], plain[(0, 1)]["image"])
    assert len(reads) == 4 and reads[0] == 1 and swapped.groups[reads[1]] != swapped.groups[1]
    alone = _dataset(manifest, sbi_p=1.0, seed=3, identity_p=1.0)
    alone.donors.pools = {}  # no other person: the blend falls back to a self-blend, still a fake
    assert alone[(0, 1)]["label"] == 1


def test_class_balanced_order_is_half_and_half() -> None:
    labels = np.array([0] * 30 + [1] * 6)
    order = balanced_order(labels, seed=0, epoch=0)
    assert len(order) == 36 and (labels[order] == 1).sum() == 18
    assert set(order[labels[order] == 1]) == set(range(30, 36))
    assert not np.array_equal(order, balanced_order(labels, seed=0, epoch=1))
    assert np.array_equal(order, balanced_order(labels, seed=0, epoch=0))


def test_sharded_batches_union_equals_single_process_order() -> None:
    labels = np.array([0, 1] * 13)
    spec = OrderSpec(labels, [f"g{i // 4}" for i in range(26)], seed=1, class_balance=True)
    single = ShardedBatchSampler(spec, 8)
    ranks = [ShardedBatchSampler(spec, 4, world_size=2, rank=r) for r in range(2)]
    for s in (single, *ranks):
        s.set_epoch(2)
    one = list(single)
    two = [list(b) for b in zip(*ranks, strict=True)]
    assert len(one) == len(two) == len(single) == 4  # 26 padded to 32 (whole steps)
    for b1, (r0, r1) in zip(one, two, strict=True):
        assert b1 == r0 + r1 and all(e == 2 for e, _ in b1)


def test_paired_order_keeps_group_pairs_in_a_batch() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1, 1])
    groups = ["a", "a", "a", "a", "b", "b", "c", "c", "c", "d", "d", "d"]
    order = OrderSpec(labels, groups, seed=0, pair_sources=True).order(epoch=0, micro_batch=4)
    assert sorted(order) == list(range(12))
    batches = [order[i : i + 4] for i in range(0, 12, 4)]
    for g in "abcd":  # each group has reals and fakes: at least one batch holds both from it
        assert any({0, 1} <= {labels[i] for i in b if groups[i] == g} for b in batches)


def test_pairing_keeps_the_dataset_balance_and_pairs_each_group() -> None:
    """pair_sources with balance_datasets: the balanced draws (repeats included) are only re-arranged,
    and as many (real, fake) draw pairs of a group share a micro-batch as the group's draws allow."""
    labels = np.array([0, 0, 1, 1, 1, 1, 0, 1, 1, 1] + [0] * 6)
    groups = ["a"] * 6 + ["b"] * 4 + ["p"] * 6
    datasets = ["ffpp"] * 10 + ["photos"] * 6
    plain = OrderSpec(labels, groups, seed=3, datasets=datasets)
    paired = OrderSpec(labels, groups, seed=3, datasets=datasets, pair_sources=True)
    order = paired.order(epoch=1, micro_batch=4)
    assert sorted(order.tolist()) == sorted(plain.order(epoch=1, micro_batch=4).tolist())
    assert len(order) == paired.length() == 20  # ffpp: 7 fakes, 7 real draws (reals repeated); photos once
    g, lab = np.asarray(groups)[order], labels[order]
    for group in "ab":  # every possible (real, fake) pair of the group sits in one micro-batch
        mine = g == group
        together = sum(min(((mine & (lab == 0))[s : s + 4]).sum(), ((mine & (lab == 1))[s : s + 4]).sum())
                       for s in range(0, len(order), 4))
        assert together == min((mine & (lab == 0)).sum(), (mine & (lab == 1)).sum()) > 0
    assert not np.array_equal(order, paired.order(epoch=2, micro_batch=4))



def test_pairing_spreads_unpaired_draws_over_the_batches() -> None:
    """Unpaired draws (photos, GAN faces) are mixed into the paired batches, not gathered in batches
    of their own, where BatchNorm would see one source a batch."""
    labels = np.array([0, 1] * 40 + [0] * 40)
    groups = [f"v{i // 2}" for i in range(80)] + [f"p{i}" for i in range(40)]
    datasets = ["ffpp"] * 80 + ["photos"] * 40
    spec = OrderSpec(labels, groups, seed=1, datasets=datasets, pair_sources=True)
    for epoch in range(3):
        order = spec.order(epoch=epoch, micro_batch=8)
        photos = np.asarray(datasets)[order] == "photos"
        per_batch = photos.reshape(-1, 8).sum(axis=1)  # 15 batches, 40 photos: about 2.7 a batch
        assert per_batch.max() <= 6 and (per_batch > 0).sum() >= 10
        g, lab = np.asarray(groups)[order].reshape(-1, 8), labels[order].reshape(-1, 8)
        assert all(set(lab[b][g[b] == v]) == {0, 1} for b in range(15) for v in set(g[b]) if v[0] == "v")

# ---- the loop --------------------------------------------------------------------------------------

def _state(run: Path) -> dict:
    return torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)


def test_loss_falls_best_on_val_auc_and_calibrated_export(tmp_path: Path, manifest: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import load_file

    from deepfake_detection.export.onnx import read_onnx_spec
    from deepfake_detection.infer.backends import OnnxBackend
    from deepfake_detection.models.files import load_model_file
    from deepfake_detection.train import validation

    aucs = iter([0.6, 0.9, 0.7, 0.8, 0.95])  # mocked: best is epoch 2; patience 2 stops after epoch 4
    monkeypatch.setattr(validation, "roc_auc", lambda labels, scores: next(aucs))
    run = train(cfg_of(manifest, tmp_path / "run", "epochs=5", "early_stopping_patience=2"))
    m = read_metrics(run)
    assert list(m.columns) == ["epoch", "train_loss", "val_loss", "val_auc", "val_auc_within", "lr",
                               "seconds"]
    assert list(m["epoch"]) == [1, 2, 3, 4] and list(m["val_auc"]) == [0.6, 0.9, 0.7, 0.8]
    assert m["train_loss"].iloc[-1] < 0.8 * m["train_loss"].iloc[0]  # it learns
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] == 2 and summary["val_auc"] == 0.9 and summary["early_stopped"]
    best, final = load_file(str(run / "best.safetensors")), load_file(str(run / "model.safetensors"))
    last = _state(run)["model"]
    assert all(torch.equal(best[k], final[k]) for k in best)
    assert not all(torch.equal(best[k], last[k]) for k in best)  # the best epoch, not the last one

    spec = read_onnx_spec(run / "model.onnx")
    assert spec.temperature == pytest.approx(summary["temperature"]) and spec.temperature != 1.0
    assert summary["calibration"] == "platt" and spec.bias == pytest.approx(summary["bias"])
    assert spec.threshold == pytest.approx(summary["threshold"]) and 0 < spec.threshold < 1
    model, tspec = load_model_file(run / "model.safetensors")
    assert tspec == spec
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy().ravel()
    np.testing.assert_allclose(OnnxBackend(run / "model.onnx").logits(x), ref, atol=1e-4)
    assert yaml.safe_load((run / "config.yaml").read_text())["early_stopping_patience"] == 2
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg_of(manifest, tmp_path / "run"))


def test_checkpoint_picked_by_within_source_auc(tmp_path: Path, manifest: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from deepfake_detection.train import validation

    pooled, within = iter([0.9, 0.6, 0.7]), iter([0.5, 0.8, 0.7])  # the two disagree on the best epoch
    monkeypatch.setattr(validation, "roc_auc", lambda labels, scores: next(pooled))
    seen: list[set[str]] = []

    def fake_within(labels: np.ndarray, scores: np.ndarray, sources: np.ndarray) -> float:
        assert len(sources) == len(labels)  # one dataset name per validation crop, in order
        seen.append(set(sources))
        return next(within)

    monkeypatch.setattr(validation, "within_source_auc", fake_within)
    run = train(cfg_of(manifest, tmp_path / "run", "epochs=3", "select_metric=within_source_auc"))
    m = read_metrics(run)
    assert list(m["val_auc"]) == [0.9, 0.6, 0.7] and list(m["val_auc_within"]) == [0.5, 0.8, 0.7]
    assert seen == [{"test"}] * 3
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] == 2 and summary["select_metric"] == "within_source_auc"
    assert summary["val_auc"] == 0.6 and summary["val_auc_within"] == 0.8


def test_resume_is_bit_exact(tmp_path: Path, manifest: Path) -> None:
    opts = ("data.sbi=true", "data.augment={}", "model.drop_rate=0.2", "optim.label_smoothing=0.1",
            "optim.grad_accum=2", "optim.grad_clip=1.0", "batch_size=4", "schedule.name=cosine",
            "schedule.warmup_epochs=0.5")
    full = train(cfg_of(manifest, tmp_path / "full", *opts))
    cfg = cfg_of(manifest, tmp_path / "sliced", *opts)
    train(cfg, stop_after=1)
    assert len(read_metrics(tmp_path / "sliced")) == 1 and not (tmp_path / "sliced" / "summary.json").exists()
    sliced = train(cfg, resume=True)
    a, b = _state(full), _state(sliced)
    assert a["epoch"] == b["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k, st in a["optimizer"]["state"].items():
        assert all(torch.equal(v, b["optimizer"]["state"][k][n]) for n, v in st.items())
    cols = ["train_loss", "val_loss", "val_auc", "lr"]
    pd.testing.assert_frame_equal(read_metrics(full)[cols], read_metrics(sliced)[cols])


def test_frozen_backbone_trains_only_the_head(tmp_path: Path, manifest: Path) -> None:
    from deepfake_detection.train.distributed import DistInfo
    from deepfake_detection.train.setup import build_model

    cfg = cfg_of(manifest, tmp_path / "run", "model.freeze_backbone=true", "epochs=1")
    initial = {k: v.clone() for k, v in build_model(cfg, DistInfo(1, 0, 0, torch.device("cpu")),
                                                    pretrained=False).state_dict().items()}
    trained = _state(train(cfg))["model"]
    backbone = [k for k in initial if k.startswith("backbone.")]
    assert backbone and all(torch.equal(initial[k], trained[k]) for k in backbone)  # BN stats too
    assert not torch.equal(initial["head.fc.weight"], trained["head.fc.weight"])


# ---- torchrun --------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_torchrun_two_processes_match_one_and_resume_across_sizes(tmp_path: Path, manifest: Path) -> None:
    # Same global batch (2 x 4 vs 1 x 8), same per-sample stream (SBI on, seeded per sample), no dropout.
    # BatchNorm statistics are per process on CPU (no SyncBatchNorm there), hence a tolerance.
    # The 2-process run continues a 1-process checkpoint (epoch 1), and is continued by 1 process.
    opts = ("data.sbi=true", "epochs=3", "optim.lr=1e-3")
    single = train(cfg_of(manifest, tmp_path / "single", *opts))
    ddp = tmp_path / "ddp"
    train(cfg_of(manifest, ddp, *opts), stop_after=1)
    cfg_path = tmp_path / "ddp.yaml"
    cfg_path.write_text(yaml.safe_dump(apply_overrides(base_dict(manifest, ddp), [*opts, "batch_size=4"])))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "deepfake_detection.cli", "train",
           "--config", str(cfg_path), "--resume"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, "\n".join(ln for ln in proc.stderr.splitlines() if "it/s]" not in ln)[-6000:]
    # Rank 0 alone logs (both ranks resume; only one says so).
    assert proc.stderr.count("resuming a 1-process checkpoint on 2 process(es)") == 1
    assert proc.stderr.count("epoch 3: train_loss") == 1
    assert (ddp / "model.onnx").is_file()
    assert json.loads((ddp / "summary.json").read_text())["world_size"] == 2
    a, b = read_metrics(single), read_metrics(ddp)
    assert list(b["epoch"]) == [1, 2, 3]
    np.testing.assert_allclose(b["train_loss"][0], a["train_loss"][0], rtol=1e-6)  # the same process
    # Epoch 2 starts from identical weights: only BatchNorm batch statistics (over 4 crops, not 8)
    # differ; over its 4 steps that moved the loss by 8.5% here (deterministic on CPU).
    np.testing.assert_allclose(b["train_loss"][1], a["train_loss"][1], rtol=0.12)
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=0.2)
    np.testing.assert_allclose(b["val_loss"], a["val_loss"], rtol=0.2)
    np.testing.assert_allclose(b["lr"], a["lr"])
    # The 2-process checkpoint continues in one process (the global batch kept at 8).
    train(cfg_of(manifest, ddp, *opts, "epochs=4", "batch_size=8"), resume=True)
    assert list(read_metrics(ddp)["epoch"]) == [1, 2, 3, 4] and _state(ddp)["world_size"] == 1


def test_dataset_balance_makes_every_dataset_half_fake() -> None:
    """balance_datasets: no source stands for a label. A dataset with both classes repeats its
    minority class; a real-only pool is drawn once (its fakes come from self-blending)."""
    from deepfake_detection.train.data import dataset_balanced_order
    from deepfake_detection.train.setup import real_only_datasets

    labels = np.array([0] * 3 + [1] * 10 + [0] * 20)
    datasets = ["ffpp"] * 13 + ["photos"] * 20
    spec = OrderSpec(labels, ["g"] * 33, seed=0, datasets=datasets)
    order = spec.order(epoch=1, micro_batch=8)
    assert len(order) == spec.length() == 2 * 10 + 20
    names = np.asarray(datasets)[order]
    assert (labels[order][names == "ffpp"] == 0).sum() == (labels[order][names == "ffpp"] == 1).sum() == 10
    assert sorted(order[names == "photos"].tolist()) == list(range(13, 33))
    assert set(order[(names == "ffpp") & (labels[order] == 0)].tolist()) == {0, 1, 2}  # all reals used
    assert not np.array_equal(order, dataset_balanced_order(labels, datasets, 0, epoch=2))
    rows = pd.DataFrame({"label": labels, "dataset": datasets})
    assert real_only_datasets(rows).tolist() == [False] * 13 + [True] * 20
    sampler = ShardedBatchSampler(spec, 8)
    assert len(sampler) == 5 and sum(len(b) for b in sampler) == 40


def test_in_domain_self_blends_keep_every_dataset_half_fake(tmp_path: Path, manifest: Path) -> None:
    """mixed_sbi_ratio r: a quarter of the draws of FF++-like reals are blended, so that dataset's own
    fakes are drawn half as often (1 - 2r): reals kept = blends + own fakes, in expectation."""
    from deepfake_detection.train.setup import sbi_probabilities

    labels = np.array([0] * 8 + [1] * 40 + [0] * 20)
    datasets = ["ffpp"] * 48 + ["photos"] * 20
    spec = OrderSpec(labels, ["g"] * 68, seed=0, datasets=datasets, mixed_sbi=0.25)
    order = spec.order(epoch=0, micro_batch=8)
    names = np.asarray(datasets)[order]
    ff = labels[order][names == "ffpp"]
    assert (ff == 0).sum() == 40 and (ff == 1).sum() == 20 and len(order) == spec.length() == 80
    rows = pd.DataFrame({"label": labels, "dataset": datasets})
    cfg = cfg_of(manifest, tmp_path / "run", "data.sbi=true", "data.balance_datasets=true",
                 "data.sbi_ratio=0.5", "data.mixed_sbi_ratio=0.25")
    p = sbi_probabilities(rows, cfg)
    assert p.tolist() == [0.25] * 8 + [0.0] * 40 + [0.5] * 20
    expected_fake = (ff == 0).sum() * 0.25 + (ff == 1).sum()
    assert expected_fake == (ff == 0).sum() * 0.75  # half real, half fake in expectation
    plain = cfg_of(manifest, tmp_path / "run", "data.sbi=true", "data.balance_datasets=true")
    assert sbi_probabilities(rows, plain).tolist() == [0.0] * 48 + [0.5] * 20  # default: no change
    with pytest.raises(ConfigError, match="needs data.balance_datasets"):
        train(cfg_of(manifest, tmp_path / "run", "data.sbi=true", "data.mixed_sbi_ratio=0.25"))


def test_sharpness_bins_make_blur_stand_for_no_label(tmp_path: Path, manifest: Path) -> None:
    """balance_sharpness_bins: fakes blurrier than reals (FF++ Deepfakes) are drawn against as many
    equally blurry reals, so the blurriest draws are half fake, not all fake."""
    import cv2

    from deepfake_detection.train.sharpness import face_sharpness, sharpness_strata

    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(40):  # 20 fakes, 15 of them blurred; 20 reals, 5 of them blurred
        fake = i < 20
        img = rng.integers(0, 255, (64, 64), dtype=np.uint8)
        if i < 15 or i >= 35:
            img = cv2.GaussianBlur(img, (0, 0), 2.0)
        cv2.imwrite(str(tmp_path / f"{i}.png"), img)
        paths.append(str(tmp_path / f"{i}.png"))
        labels.append(int(fake))
    labels_a = np.array(labels + [0] * 5)
    names = ["ffpp"] * 40 + ["photos"] * 5
    paths += paths[:5]
    assert face_sharpness(paths[39]) < face_sharpness(paths[20]) / 10
    units = sharpness_strata(np.array([face_sharpness(p) for p in paths]), names, labels_a, bins=2)
    assert units[40:] == ["photos"] * 5 and set(units[:40]) == {"ffpp#0", "ffpp#1"}
    blurry = [u == "ffpp#0" for u in units]
    assert blurry == [True] * 15 + [False] * 20 + [True] * 5 + [False] * 5  # the blurred crops

    def blurry_fake_share(datasets: list[str]) -> float:
        order = OrderSpec(labels_a, ["g"] * 45, seed=0, datasets=datasets).order(epoch=0, micro_batch=8)
        drawn = order[np.asarray(blurry + [False] * 5)[order]]
        return float(labels_a[drawn].mean())

    assert blurry_fake_share(names) == 0.75  # plain balance: blur stands for fake
    assert blurry_fake_share(units) == 0.5
    with pytest.raises(ConfigError, match="needs data.balance_datasets"):
        train(cfg_of(manifest, tmp_path / "run", "data.balance_sharpness_bins=3"))
    out = train(cfg_of(manifest, tmp_path / "r2", "data.balance_datasets=true", "data.sbi=true",
                       "data.balance_sharpness_bins=2", "epochs=1"))
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1


def test_sharpness_matching_gives_both_classes_one_blur(tmp_path: Path, manifest: Path) -> None:
    """match_sharpness_p=1: sharp reals are blurred down to the blurry fakes of their dataset, so that
    blur no longer tells the classes apart; fakes are never sharpened, one-class pools are untouched."""
    import cv2

    from deepfake_detection.faces.quality import centre_sharpness
    from deepfake_detection.train.sharpness import SharpnessMatcher, blur_to_sharpness

    rng = np.random.default_rng(0)
    sharp = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(10)]
    blurry = [cv2.GaussianBlur(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), (0, 0), s)
              for s in np.linspace(1.0, 2.0, 10)]
    images = sharp + blurry + sharp[:3]  # 10 sharp reals, 10 blurry fakes (ffpp), 3 sharp photo reals
    labels = np.array([0] * 10 + [1] * 10 + [0] * 3)
    names = ["ffpp"] * 20 + ["photos"] * 3

    def grey_sharpness(img: np.ndarray) -> float:
        return centre_sharpness(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))

    sharpness = np.array([grey_sharpness(im) for im in images])
    assert sharpness[:10].min() > 10 * sharpness[10:20].max()
    target = sharpness[12]
    assert 0.5 * target < grey_sharpness(blur_to_sharpness(sharp[0], target)) <= 1.05 * target
    assert blur_to_sharpness(blurry[0], 1e9) is blurry[0]  # never sharpened
    matcher = SharpnessMatcher.build(sharpness, names, labels, p=1.0)
    draws = np.random.default_rng(1)
    after = [[grey_sharpness(matcher(i, images[i], draws)) for i in range(23)] for _ in range(5)]
    reals, fakes = np.array(after)[:, :10], np.array(after)[:, 10:20]
    assert np.median(reals) < 1.1 * np.median(fakes) and reals.max() < 1.1 * fakes.max()
    assert np.array_equal(fakes, np.tile(sharpness[10:20], (5, 1)))
    assert np.array_equal(np.array(after)[:, 20:], np.tile(sharpness[20:], (5, 1)))
    untouched = np.random.default_rng(2)
    matcher(21, images[21], untouched)  # a one-class pool draws nothing
    assert untouched.random() == np.random.default_rng(2).random()
    out = train(cfg_of(manifest, tmp_path / "run", "data.balance_datasets=true", "data.sbi=true",
                       "data.match_sharpness_p=1.0", "epochs=1"))
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1


def test_balance_datasets_trains_with_paired_sources(tmp_path: Path, manifest: Path) -> None:
    out = train(cfg_of(manifest, tmp_path / "run", "data.balance_datasets=true", "data.sbi=true",
                       "data.pair_sources=true", "epochs=1"))
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1
    with pytest.raises(ConfigError, match="choose one"):
        train(cfg_of(manifest, tmp_path / "r2", "data.balance_datasets=true", "data.class_balance=true"))


# ---- weight averaging ("model soup") -------------------------------------------------------------

def test_tta_hflip_run_is_validated_and_served_with_mirror_tta(tmp_path: Path, manifest: Path) -> None:
    """model.tta_hflip: the epochs, the checkpoint choice and the calibration score crops as the
    exported spec will serve them (mean logit of each crop and its mirror image)."""
    from dataclasses import replace

    from deepfake_detection.export.onnx import read_onnx_spec
    from deepfake_detection.models.files import load_model_file, read_model_spec, save_model
    from deepfake_detection.train.validation import score_model_file

    out = train(cfg_of(manifest, tmp_path / "run", "model.tta_hflip=true", "epochs=1"))
    assert read_model_spec(out / "model.safetensors").tta_hflip
    assert read_onnx_spec(out / "model.onnx").tta_hflip
    epoch = next(csv.DictReader((out / "metrics.csv").open()))  # the one epoch, as the trainer scored it
    mirrored = score_model_file(out / "model.safetensors", out / "config.yaml")
    assert mirrored["val_loss"] == pytest.approx(float(epoch["val_loss"]), rel=1e-5)
    model, spec = load_model_file(out / "model.safetensors")
    plain = save_model(model, replace(spec, tta_hflip=False), tmp_path / "plain.safetensors")
    assert score_model_file(plain, out / "config.yaml")["val_loss"] != pytest.approx(mirrored["val_loss"])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory, manifest: Path) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("soup")
    torch.set_num_threads(1)
    return tuple(train(cfg_of(manifest, root / f"run{seed}", "epochs=1", f"seed={seed}")) for seed in (0, 1))


def test_average_is_the_mean_of_the_weights_with_calibration_reset(two_runs: tuple[Path, Path],
                                                                   tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from deepfake_detection.errors import ModelError
    from deepfake_detection.models.files import load_model_file, save_model
    from deepfake_detection.models.soup import average_model_files

    files = [run / "model.safetensors" for run in two_runs]
    model, spec = average_model_files(files, name="soup")
    a, b = (load_file(str(f)) for f in files)
    state = model.state_dict()
    floats = [k for k in a if a[k].is_floating_point()]
    assert floats and any(not torch.equal(a[k], b[k]) for k in floats)
    for k in floats:
        torch.testing.assert_close(state[k], (a[k].double() + b[k].double()).div(2).float())
    assert (spec.name, spec.temperature, spec.bias, spec.threshold) == ("soup", 1.0, 0.0, 0.5)
    assert spec.crop == load_model_file(files[0])[1].crop

    with pytest.raises(ModelError, match="at least two"):
        average_model_files(files[:1])
    other_model, other_spec = load_model_file(files[1])
    from dataclasses import replace
    save_model(other_model, replace(other_spec, input_size=48), tmp_path / "other.safetensors")
    with pytest.raises(ModelError, match="input_size"):
        average_model_files([files[0], tmp_path / "other.safetensors"])


def test_a_model_file_scores_as_its_run_scored_it(two_runs: tuple[Path, Path]) -> None:
    from deepfake_detection.train.validation import score_model_file

    run = two_runs[0]
    summary = json.loads((run / "summary.json").read_text())
    got = score_model_file(run / "model.safetensors", run / "config.yaml")
    assert got["val_auc"] == pytest.approx(summary["val_auc"], abs=1e-9)
    assert got["val_auc_within"] == pytest.approx(summary["val_auc_within"], abs=1e-9)
    assert got["val_samples"] == summary["val_samples"]


def _average_weights(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(__file__).resolve().parents[1] / "scripts" / "average_weights.py"
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_weighted_average_mixes_and_extrapolates_along_the_line(two_runs: tuple[Path, Path]) -> None:
    """WiSE-FT's mixing coefficient: weights are divided by their sum, a negative one extrapolates, and
    weights that cannot mix are refused."""
    from safetensors.torch import load_file

    from deepfake_detection.errors import ModelError
    from deepfake_detection.models.soup import average_model_files, mixing_weights

    files = [run / "model.safetensors" for run in two_runs]
    a, b = (load_file(str(f)) for f in files)
    floats = [k for k in a if a[k].is_floating_point()]
    for weights, (wa, wb) in (([1, 3], (0.25, 0.75)), ([-0.5, 1.5], (-0.5, 1.5))):
        state = average_model_files(files, weights=weights)[0].state_dict()
        for k in floats:
            torch.testing.assert_close(state[k], (a[k].double() * wa + b[k].double() * wb).float())
    assert mixing_weights(2) == [0.5, 0.5] and mixing_weights(2, [2, 2]) == [0.5, 0.5]
    for bad, message in (([1.0], "1 weights for 2"), ([1, -1], "positive"), ([float("nan"), 1], "positive")):
        with pytest.raises(ModelError, match=message):
            average_model_files(files, weights=bad)


def test_average_weights_script_mixes_with_the_given_weights_in_the_given_order(
        two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    files = [str(run / "model.safetensors") for run in two_runs]
    out = tmp_path / "mix"
    proc = _average_weights(*files, "--config", str(two_runs[0] / "config.yaml"), "--out", str(out),
                            "--weights", "3", "1")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mean_of"] == files and summary["weights"] == [0.75, 0.25]
    a, b, mix = (load_file(str(f)) for f in (*files, out / "model.safetensors"))
    key = next(k for k in a if a[k].is_floating_point() and not torch.equal(a[k], b[k]))
    torch.testing.assert_close(mix[key], (a[key].double() * 0.75 + b[key].double() * 0.25).float())
    refused = _average_weights(*files, "--config", str(two_runs[0] / "config.yaml"), "--out",
                               str(tmp_path / "bad"), "--weights", "1", "-1")
    assert refused.returncode == 2 and "positive" in refused.stderr and not (tmp_path / "bad").exists()


def test_average_weights_script_refuses_files_of_another_network(two_runs: tuple[Path, Path],
                                                                 tmp_path: Path) -> None:
    from dataclasses import replace

    from deepfake_detection.models.files import load_model_file, save_model

    model, spec = load_model_file(two_runs[1] / "model.safetensors")
    save_model(model, replace(spec, input_size=48), tmp_path / "other.safetensors")
    proc = _average_weights(str(two_runs[0] / "model.safetensors"), str(tmp_path / "other.safetensors"),
                            "--config", str(two_runs[0] / "config.yaml"), "--out", str(tmp_path / "mean"))
    assert proc.returncode == 2 and "input_size" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "mean").exists()  # refused before any scoring


def test_average_weights_script_keeps_only_inputs_that_help(two_runs: tuple[Path, Path],
                                                            tmp_path: Path) -> None:
    from deepfake_detection.models.files import read_model_spec

    files = [str(run / "model.safetensors") for run in two_runs]
    out = tmp_path / "mean"
    proc = _average_weights(*files, "--config", str(two_runs[0] / "config.yaml"), "--out", str(out),
                            "--greedy")
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    singles = {d["model"]: d["val_auc_within"] for d in lines if "model" in d and "result" not in d}
    assert set(singles) == set(files)
    trial = next(d for d in lines if "trial" in d)
    assert trial["trial"][0] == max(singles, key=singles.get)  # best input first
    if trial["val_auc_within"] >= max(singles.values()):  # the mean was kept
        assert proc.returncode == 0, proc.stderr
        final = lines[-1]
        assert sorted(final["mean_of"]) == sorted(files)
        assert read_model_spec(out / "model.safetensors").threshold == 0.5
        summary = json.loads((out / "summary.json").read_text())
        assert summary["val_auc_within"] == final["val_auc_within"] and set(summary["inputs"]) == set(files)
        assert (out / "config.yaml").read_text() == (two_runs[0] / "config.yaml").read_text()
    else:  # the mean lowered validation AUC: nothing written, the best single model stays
        assert proc.returncode == 1 and not out.exists() and lines[-1]["model"] == trial["trial"][0]
