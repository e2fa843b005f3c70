"""Sharpness-aware minimisation (optim.sam_rho): the perturbation, BatchNorm statistics, the step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from deepfake_detection.train import ConfigError, train
from deepfake_detection.train.distributed import DistInfo
from deepfake_detection.train.loop import (
    StepContext,
    frozen_batchnorm_stats,
    sam_ascend,
    sam_return,
    train_one_epoch,
)
from test_train import cfg_of, make_manifest

CPU = DistInfo(1, 0, 0, torch.device("cpu"))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_manifest(tmp_path_factory.mktemp("crops"))


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 1))


def _batches(n: int = 3) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [{"image": torch.randn(8, 3, 2, 2, generator=g), "label": (torch.arange(8) % 2).float()}
            for _ in range(n)]


def test_sam_is_off_by_default_and_refuses_split_steps_and_fp16(tmp_path: Path, manifest: Path) -> None:
    assert cfg_of(manifest, tmp_path).optim.sam_rho == 0.0
    with pytest.raises(ConfigError, match="sam_rho needs optim.grad_accum 1"):
        cfg_of(manifest, tmp_path, "optim.sam_rho=0.05", "optim.grad_accum=2")
    with pytest.raises(ConfigError, match="sam_rho"):
        cfg_of(manifest, tmp_path, "optim.sam_rho=-0.1")
    with pytest.raises(ConfigError, match="sam_rho needs amp bf16 or none"):  # on CPU too (amp ignored)
        cfg_of(manifest, tmp_path, "optim.sam_rho=0.05", "amp=fp16")
    assert cfg_of(manifest, tmp_path, "optim.sam_rho=0.05", "amp=bf16").amp == "bf16"


def test_ascend_moves_rho_along_the_normalised_gradient_and_return_undoes_it() -> None:
    net = _net()
    params = list(net.parameters())
    before = [p.detach().clone() for p in params]
    net(torch.randn(8, 3, 2, 2)).sum().backward()
    grads = [p.grad.clone() for p in params]
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    moves = sam_ascend(params, 0.05)
    for p, b, g in zip(params, before, grads, strict=True):
        torch.testing.assert_close(p.detach(), b + 0.05 * g / norm)
    total = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(params, before, strict=True)))
    assert abs(float(total) - 0.05) < 1e-6  # the whole move has length rho
    sam_return(params, moves)
    for p, b in zip(params, before, strict=True):
        torch.testing.assert_close(p.detach(), b)


def test_batchnorm_running_statistics_are_kept_inside_and_move_outside() -> None:
    net = _net().train()
    bn = net[2]
    mean, count = bn.running_mean.clone(), int(bn.num_batches_tracked)
    with frozen_batchnorm_stats(net):
        net(torch.randn(8, 3, 2, 2) + 3.0)
    torch.testing.assert_close(bn.running_mean, mean)
    assert int(bn.num_batches_tracked) == count and bn.momentum == 0.1  # restored
    net(torch.randn(8, 3, 2, 2) + 3.0)
    assert not torch.allclose(bn.running_mean, mean)


def _run(net: nn.Sequential, rho: float, batches: list[dict[str, torch.Tensor]]) -> None:
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    ctx = StepContext(torch.device("cpu"), None, False, progress=False, sam_rho=rho)
    train_one_epoch(net, net, batches, opt, sched, torch.amp.GradScaler("cpu", enabled=False), ctx, CPU)


def test_a_sam_step_applies_the_gradient_taken_at_the_moved_weights() -> None:
    """One SAM epoch equals the algorithm written out by hand, step by step: gradient at w, move to
    w + rho g / |g|, gradient there (BatchNorm statistics untouched), plain SGD from w with it."""
    batches, rho = _batches(), 0.05
    net = _net()
    _run(net, rho, batches)

    ref = _net().train()
    bce = nn.functional.binary_cross_entropy_with_logits
    for b in batches:
        params = list(ref.parameters())
        ref.zero_grad()
        bce(ref(b["image"]).squeeze(1), b["label"]).backward()
        with torch.no_grad():
            norm = torch.sqrt(sum((p.grad ** 2).sum() for p in params))
            moves = [rho * p.grad / norm for p in params]
            for p, m in zip(params, moves, strict=True):
                p.add_(m)
        stats = [ref[2].running_mean.clone(), ref[2].running_var.clone(), ref[2].num_batches_tracked.clone()]
        ref.zero_grad()
        bce(ref(b["image"]).squeeze(1), b["label"]).backward()
        with torch.no_grad():
            ref[2].running_mean.copy_(stats[0])
            ref[2].running_var.copy_(stats[1])
            ref[2].num_batches_tracked.copy_(stats[2])
            for p, m in zip(params, moves, strict=True):
                p.sub_(m)
                p.sub_(0.1 * p.grad)
    for name, value in ref.state_dict().items():
        torch.testing.assert_close(net.state_dict()[name], value, msg=name)

    plain = _net()
    _run(plain, 0.0, batches)
    assert not torch.allclose(plain[1].weight, net[1].weight)  # rho 0 is the plain step, and differs


def test_training_with_sam_runs_end_to_end_and_changes_the_weights(tmp_path: Path, manifest: Path) -> None:
    off = train(cfg_of(manifest, tmp_path / "off", "epochs=1"))
    on = train(cfg_of(manifest, tmp_path / "on", "epochs=1", "optim.sam_rho=0.05"))
    assert (on / "model.onnx").is_file()
    a, b = load_file(off / "model.safetensors"), load_file(on / "model.safetensors")
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
