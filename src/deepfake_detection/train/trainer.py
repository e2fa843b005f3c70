"""The run: epochs, validation, checkpoints, early stopping; calibration and export at the end.

Run folder (`out`): config.yaml, metrics.csv, last.ckpt (resume), best.safetensors (the best epoch by
`select_metric`), model.safetensors + model.onnx (best weights with fitted temperature and threshold),
summary.json.
Only rank 0 writes; every rank computes the same validation numbers (gathered predictions), so they
all take the same early-stopping decision.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import random
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from deepfake_detection.evaluate.calibration import calibrated, choose_threshold, fit_calibration
from deepfake_detection.evaluate.metrics import finite_or_none
from deepfake_detection.export.onnx import check_parity, export_onnx
from deepfake_detection.io.atomic import write_text_atomic
from deepfake_detection.models.files import load_model_file, save_model
from deepfake_detection.models.registry import default_spec
from deepfake_detection.models.spec import ModelSpec
from deepfake_detection.train import distributed as D
from deepfake_detection.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from deepfake_detection.train.config import ConfigError, TrainConfig, config_to_dict, save_config
from deepfake_detection.train.loop import StepContext, bce_from_logits, predict, train_one_epoch
from deepfake_detection.train.optim import build_optimizer, build_scheduler
from deepfake_detection.train.setup import RunData, build_data, build_model
from deepfake_detection.train.validation import validation_aucs

if TYPE_CHECKING:  # product_path (pandas, the layout registry) is imported only when the fit runs
    from deepfake_detection.evaluate.product_path import Fit

log = logging.getLogger(__name__)

METRIC_FIELDS = ("epoch", "train_loss", "val_loss", "val_auc", "val_auc_within", "lr", "seconds")


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    # restval: rows of a run resumed from before a column existed leave it empty
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(path, buf.getvalue())


def _tensorboard(cfg: TrainConfig, out: Path) -> Any:
    if not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: optional, stay silent
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.amp == "none":
        return None
    if device.type != "cuda":
        log.info("amp=%s ignored on %s: training in float32", cfg.amp, device.type)
        return None
    return torch.bfloat16 if cfg.amp == "bf16" else torch.float16


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, cfg: TrainConfig, info: D.DistInfo, *, resume: bool = False) -> None:
        self.cfg, self.info, self.out = cfg, info, Path(cfg.out)
        self.ckpt_path = self.out / "last.ckpt"
        if resume and not self.ckpt_path.is_file():
            raise ConfigError(f"--resume: no checkpoint at {self.ckpt_path}")
        if not resume and self.ckpt_path.is_file():
            raise ConfigError(f"{self.out} already holds a run (last.ckpt): resume it or choose another out")
        _seed_everything(cfg.seed)
        size = {"input_size": cfg.model.input_size} if cfg.model.input_size else {}
        self.spec: ModelSpec = default_spec(cfg.model.arch, name=self.out.name, **size)
        self.data: RunData = build_data(cfg, self.spec, info)
        # The model is served on crops made exactly as its training crops were: the manifests' protocol.
        self.spec = replace(self.spec, crop=self.data.protocol, tta_hflip=cfg.model.tta_hflip)
        self.core = build_model(cfg, info, pretrained=False if resume else cfg.model.pretrained)
        self.model: nn.Module = self.core
        if info.distributed:
            ids = [info.device.index] if info.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.core, device_ids=ids)
        self.optimizer = build_optimizer(self.core.parameters(), cfg.optim)
        self.steps_per_epoch = len(self.data.train_sampler) // cfg.optim.grad_accum
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, self.steps_per_epoch, cfg.epochs)
        amp = _amp_dtype(cfg, info.device)
        self.scaler = torch.amp.GradScaler(info.device.type, enabled=amp == torch.float16)
        self.ctx = StepContext(info.device, amp, cfg.channels_last, cfg.optim.grad_accum, cfg.optim.grad_clip,
                               cfg.optim.label_smoothing, cfg.model.freeze_backbone,
                               consistency_weight=cfg.consistency.weight,
                               consistency_detach_clean=cfg.consistency.detach_clean,
                               sam_rho=cfg.optim.sam_rho)
        self.epoch, self.best_auc, self.best_epoch, self.bad_epochs = 0, -math.inf, 0, 0
        self.stopped, self.elapsed = False, 0.0
        self.history: list[dict[str, Any]] = []
        if resume:
            self._restore()
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
        log.info("global batch %d = batch_size %d x world_size %d x grad_accum %d; %d steps/epoch",
                 cfg.batch_size * info.world_size * cfg.optim.grad_accum, cfg.batch_size, info.world_size,
                 cfg.optim.grad_accum, self.steps_per_epoch)

    # ---- checkpoints ------------------------------------------------------------------------------

    def _payload(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "model": self.core.state_dict(), "spec": self.spec.to_json(),
            "config": config_to_dict(self.cfg), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "rng": rng_state(),
            "best_auc": self.best_auc, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
            "stopped": self.stopped, "elapsed": self.elapsed, "history": self.history,
            "world_size": self.info.world_size,
        }

    def _restore(self) -> None:
        ck = load_checkpoint(self.ckpt_path)
        changed = sorted(k for k, v in config_to_dict(self.cfg).items() if ck["config"].get(k) != v)
        if changed:
            log.warning("resuming with a config that differs from the checkpoint's in %s", ", ".join(changed))
        if ck["world_size"] != self.info.world_size:  # fine: the state dict is the unwrapped module's
            log.info("resuming a %d-process checkpoint on %d process(es)", ck["world_size"],
                     self.info.world_size)
        self.core.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        # The lr for the next step from this run's schedule (the same value unless epochs or the steps
        # per epoch changed, e.g. `--set epochs=12` to extend a finished cosine run).
        step = self.scheduler.last_epoch
        for group, base, fn in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                   self.scheduler.lr_lambdas, strict=True):
            group["lr"] = base * fn(step)
        self.scaler.load_state_dict(ck["scaler"])
        set_rng_state(ck["rng"])
        self.epoch, self.best_epoch = int(ck["epoch"]), int(ck["best_epoch"])
        self.bad_epochs, self.stopped = int(ck["bad_epochs"]), bool(ck["stopped"])
        self.best_auc, self.elapsed = float(ck["best_auc"]), float(ck["elapsed"])
        self.history = list(ck["history"])
        log.info("resumed %s after epoch %d", self.ckpt_path, self.epoch)

    def _checkpoint(self) -> None:
        D.barrier(self.info)
        if self.info.is_main:
            save_checkpoint(self._payload(), self.ckpt_path)
        D.barrier(self.info)

    # ---- epochs -----------------------------------------------------------------------------------

    def _validate(self) -> tuple[float, float, float]:
        """(loss, pooled AUC, within-source AUC) on the validation crops; an undefined AUC is NaN."""
        D.broadcast_buffers(self.core, self.info)
        logits, labels = predict(self.core, self.data.val_loader, self.ctx, self.info,
                                 tta_hflip=self.spec.tta_hflip)
        sources = self.data.val_rows["dataset"].astype(str).to_numpy()  # predict keeps row order
        return (bce_from_logits(logits, labels), *validation_aucs(logits, labels, sources))

    def _run_epoch(self, tb: Any) -> None:
        t0 = time.perf_counter()
        self.data.train_sampler.set_epoch(self.epoch)
        train_loss = train_one_epoch(self.model, self.core, self.data.train_loader, self.optimizer,
                                     self.scheduler, self.scaler, self.ctx, self.info,
                                     desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}")
        val_loss, val_auc, val_auc_within = self._validate()
        self.epoch += 1
        seconds = time.perf_counter() - t0
        self.elapsed += seconds
        lr = float(self.optimizer.param_groups[0]["lr"])
        row = {"epoch": self.epoch, "train_loss": train_loss, "val_loss": val_loss, "val_auc": val_auc,
               "val_auc_within": val_auc_within, "lr": lr, "seconds": round(seconds, 3)}
        self.history.append(row)
        score = val_auc_within if self.cfg.select_metric == "within_source_auc" else val_auc
        if score > self.best_auc:  # NaN never wins; only validation data pick the checkpoint
            self.best_auc, self.best_epoch, self.bad_epochs = score, self.epoch, 0
            if self.info.is_main:
                save_model(self.core, self.spec, self.out / "best.safetensors")
        else:
            self.bad_epochs += 1
        patience = self.cfg.early_stopping_patience
        if patience is not None and self.bad_epochs >= patience:
            self.stopped = True
            log.info("early stopping: no better %s for %d epochs", self.cfg.select_metric, self.bad_epochs)
        if self.info.is_main:
            _write_metrics(self.out / "metrics.csv", self.history)
            if tb is not None:
                for k in ("train_loss", "val_loss", "val_auc", "val_auc_within", "lr"):
                    tb.add_scalar(k, row[k], self.epoch)
            log.info("epoch %d: train_loss %.4f val_loss %.4f val_auc %.4f (within sources %.4f) lr %.3g "
                     "(%.1f s)", self.epoch, train_loss, val_loss, val_auc, val_auc_within, lr, seconds)
        self._checkpoint()

    def fit(self, stop_after: int | None = None) -> Path:
        tb = _tensorboard(self.cfg, self.out) if self.info.is_main else None
        ran = 0
        try:
            while self.epoch < self.cfg.epochs and not self.stopped:
                if stop_after is not None and ran >= stop_after:
                    return self.out  # a time slice ends; `resume` continues it
                self._run_epoch(tb)
                ran += 1
        finally:
            if tb is not None:
                tb.close()
        self._finalize()
        D.barrier(self.info)
        return self.out

    # ---- the end: calibrate on validation, export -----------------------------------------------

    def _finalize(self) -> None:
        """Every rank predicts its share of the validation set with the best weights (so no rank waits
        long at a barrier); every rank fits the same numbers; rank 0 writes."""
        best = self.out / "best.safetensors"
        if not best.is_file():
            raise ConfigError("no epoch produced a defined validation AUC: cannot choose a model")
        model, spec = load_model_file(best)
        model = model.to(self.info.device)
        ctx = replace(self.ctx, amp_dtype=None, channels_last=False)  # float32, as exported
        logits, labels = predict(model, self.data.val_loader, ctx, self.info, desc="calibrate",
                                 tta_hflip=spec.tta_hflip)
        temperature, bias = fit_calibration(logits, labels, self.cfg.calibration)
        threshold = choose_threshold(calibrated(logits, temperature, bias), labels,
                                     strategy=self.cfg.threshold_strategy, target_fpr=self.cfg.target_fpr)
        spec = replace(spec, temperature=temperature, bias=bias, threshold=float(threshold))
        if not self.info.is_main:
            return
        model = model.cpu()
        save_model(model, spec, self.out / "model.safetensors")
        onnx_path = export_onnx(model, spec, self.out / "model.onnx")
        calibrated_on = "crops"
        if self.cfg.calibrate_on == "product":
            refit = self._fit_on_product_path(onnx_path)
            if refit is not None:
                spec = replace(spec, temperature=refit.temperature, bias=refit.bias,
                               threshold=refit.threshold)
                save_model(model, spec, self.out / "model.safetensors")
                onnx_path = export_onnx(model, spec, self.out / "model.onnx")
                calibrated_on = f"product path ({refit.frames} validation frames)"
        real_batch = next(iter(self.data.val_loader))["image"][:8].float().numpy()  # real crops, not noise
        parity = check_parity(model, onnx_path, inputs=real_batch)
        summary = {
            **self._best_row_aucs(), "select_metric": self.cfg.select_metric, "best_epoch": self.best_epoch,
            "epochs": self.epoch, "early_stopped": self.stopped, "calibration": self.cfg.calibration,
            "temperature": spec.temperature, "bias": spec.bias, "threshold": spec.threshold,
            "calibrated_on": calibrated_on, "crop_protocol": asdict(spec.crop),
            "threshold_strategy": self.cfg.threshold_strategy, "val_samples": len(labels),
            "onnx_parity_max_abs": parity, "seconds": round(self.elapsed, 3),
            "world_size": self.info.world_size, "arch": spec.arch, "input_size": spec.input_size,
        }
        write_text_atomic(self.out / "summary.json", json.dumps(summary, indent=2) + "\n")
        log.info("best epoch %d, val AUC %.4f, T %.3f, bias %.3f, threshold %.4f -> %s", self.best_epoch,
                 self.best_auc, spec.temperature, spec.bias, spec.threshold, onnx_path)


    def _best_row_aucs(self) -> dict[str, float | None]:
        """The best epoch's pooled and within-source validation AUCs (None: not logged in that epoch)."""
        row = next((r for r in self.history if r["epoch"] == self.best_epoch), {})
        return {k: None if row.get(k) in (None, "") else finite_or_none(float(row[k]))
                for k in ("val_auc", "val_auc_within")}

    def _fit_on_product_path(self, onnx_path: Path) -> Fit | None:
        """Calibration and threshold refitted on the validation SOURCE files through the product path
        (decode, detect, crop, classify), which is what users get; None (crop fit kept, with a
        warning) when those files cannot be read any more."""
        from deepfake_detection.errors import DFDError
        from deepfake_detection.evaluate.product_path import fit_on_product_path
        from deepfake_detection.infer.predictor import Predictor

        try:
            predictor = Predictor.load(onnx_path)
            fit = fit_on_product_path(predictor, self.data.val_rows, strategy=self.cfg.threshold_strategy,
                                      target_fpr=self.cfg.target_fpr, calibration=self.cfg.calibration)
        except DFDError as exc:
            log.warning("calibration on the product path failed (%s): keeping the fit on stored crops", exc)
            return None
        log.info("product-path calibration on %d validation frames: T %.3f, bias %.3f, threshold %.4f",
                 fit.frames, fit.temperature, fit.bias, fit.threshold)
        return fit


def train(cfg: TrainConfig, *, resume: bool = False, stop_after: int | None = None) -> Path:
    """Train (or resume) the run described by `cfg`; returns the run folder. Under torchrun every
    process calls this; rank 0 writes the files. `stop_after` ends this call after that many epochs
    (a time slice), leaving a checkpoint that `resume=True` continues."""
    info = D.setup(cfg.device)
    try:
        return Trainer(cfg, info, resume=resume).fit(stop_after)
    finally:
        D.cleanup(info)


__all__ = ["METRIC_FIELDS", "Trainer", "train"]
