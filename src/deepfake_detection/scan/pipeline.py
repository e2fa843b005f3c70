"""The scan plan: inputs -> detect tasks -> classifier actors -> one Parquet file, with a summary.

Fault tolerance is Ray's: a task whose worker dies is run again, a dead classifier actor is restarted
and its batch retried (a bounded number of times), and a block's output only counts once its task
finished, so the file holds every input exactly once; the driver checks that, id by id. Rows arrive
in the driver as they finish and are streamed into a temporary file that replaces `output` only when
the scan is complete.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepfake_detection.errors import DFDError, OutputError
from deepfake_detection.io.atomic import atomic_path, check_writable, remove_stale_temporaries
from deepfake_detection.io.images import DEFAULT_MAX_PIXELS
from deepfake_detection.io.paths import is_stdout
from deepfake_detection.scan.inputs import list_inputs
from deepfake_detection.scan.schema import RESULT_SCHEMA, input_table
from deepfake_detection.scan.stages import Classifier, detect_batch

log = logging.getLogger(__name__)

MAX_BLOCKS_PER_CPU = 200  # caps the driver's block count (10 M inputs are not 625k blocks)
MAX_ACTOR_RESTARTS = 10  # per classifier actor over a scan: rare deaths (a lost node) are survived


@dataclass
class ScanConfig:
    model: str | None = None  # .onnx/.safetensors; None: the bundled model
    backend: str = "auto"  # on CPUs; GPUs always run the .safetensors weights with PyTorch
    detector: str = "auto"
    threshold: float | None = None
    batch_size: int = 32  # images per classifier call (about one face each)
    # Inputs per detect task (~0.8 s of work). Between two tasks a worker's core idles for the round
    # trip to the driver's scheduler: at 16 (~0.4 s) that left ~10% of 2 cores idle (37.5 vs 42 images/s).
    images_per_task: int = 32
    max_retries: int = 3  # a classifier batch whose actor died is retried this often, then the scan fails
    classifiers: int | None = None  # actors; None: one per GPU, else a third of the CPUs (at least 1)
    classifier_cpus: float | None = None  # CPUs reserved per CPU actor; None: 1, or 0 under 8 CPUs
    max_pixels: int = DEFAULT_MAX_PIXELS
    ray_address: str | None = None  # None or "local": a local runtime; else join this cluster
    allow_outside_listing: bool = False  # listings may name absolute paths, file:// and ../
    progress: bool = True


@dataclass
class ScanSummary:
    output: str
    total: int = 0
    counts: Counter[str] = field(default_factory=Counter)  # by status: ok, no_face, error
    fakes: int = 0
    scored: int = 0  # images with a fake probability (ok, and no_face with whole-image models)
    seconds: float = 0.0
    skipped_videos: int = 0  # video files found in folders, globs and prefixes: not scanned

    @property
    def fake_rate(self) -> float | None:
        return self.fakes / self.scored if self.scored else None

    @property
    def images_per_second(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0

    def add(self, table: Any) -> None:
        import pyarrow.compute as pc

        self.total += table.num_rows
        for status, n in zip(*pc.value_counts(table["status"]).flatten(), strict=True):
            self.counts[str(status)] += int(n.as_py())
        self.scored += table.num_rows - table["fake_probability"].null_count
        self.fakes += int(pc.sum(pc.equal(table["label"], "fake")).as_py() or 0)

    def format(self) -> str:
        by_status = ", ".join(f"{k} {self.counts[k]}" for k in ("ok", "no_face", "error") if self.counts[k])
        rate = "n/a" if self.fake_rate is None else f"{self.fake_rate:.1%} of {self.scored} scored"
        skipped = (f"\n{self.skipped_videos} videos skipped (dfd scan scores images; score videos with "
                   "dfd detect)") if self.skipped_videos else ""
        return (f"{self.total} images ({by_status}); fake rate {rate}; {self.seconds:.1f} s, "
                f"{self.images_per_second:.1f} images/s{skipped}\nresults: {self.output}")


def _model_file(config: ScanConfig) -> str:
    """The model path the workers load, checked here first with every override (a bad --model,
    --detector or --threshold fails before Ray starts)."""
    from deepfake_detection.infer.bundled import resolve_model
    from deepfake_detection.infer.predictor import Predictor

    path, _ = resolve_model(config.model)
    Predictor.load(config.model, backend=config.backend, threshold=config.threshold,  # type: ignore[arg-type]
                   detector=config.detector, max_pixels=config.max_pixels, batch_size=config.batch_size,
                   threads=1)
    return str(path.resolve())


def _root_cause(exc: BaseException) -> str:
    """The innermost error of Ray's wrappers (RayTaskError -> UserCodeException -> ...), one line."""
    while (inner := getattr(exc, "cause", None) or exc.__cause__) is not None and inner is not exc:
        exc = inner
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _block_rows(inputs: int, per_task: int, cpus: int) -> int:
    """Inputs per detect block: `per_task`, or more where that would make over MAX_BLOCKS_PER_CPU
    blocks per CPU (a bigger block is worked through in batches of `per_task` inside its task)."""
    return max(per_task, -(-inputs // (MAX_BLOCKS_PER_CPU * max(1, cpus))))


def _actors(config: ScanConfig, resources: dict[str, float], *, torch_weights: bool = True) -> dict[str, Any]:
    """map_batches arguments for the classifier pool: GPUs when the cluster has them (and the model
    has PyTorch weights to run there), else CPUs."""
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    if gpus and not torch_weights:
        log.warning("the cluster has GPUs but the model has no .safetensors weights: classifying on CPUs")
    if gpus and torch_weights:
        return {"concurrency": config.classifiers or gpus, "num_gpus": 1, "num_cpus": 1,
                "device": "cuda", "threads": 1}
    # Classifying a face costs about half of decoding and detecting its image (13 vs 25 ms on one
    # core with the bundled model), so about a third of the CPUs classify. Under 8 CPUs one actor
    # reserves none: a reserved core would leave a detect slot idle while the actor waits for crops,
    # and the OS shares the cores between the actor and the detect tasks instead.
    share = config.classifier_cpus if config.classifier_cpus is not None else (1.0 if cpus >= 8 else 0.0)
    count = config.classifiers or (max(1, round(cpus / 3)) if cpus >= 8 else 1)
    return {"concurrency": count, "num_gpus": 0, "num_cpus": share, "device": "cpu",
            "threads": max(1, int(share))}


class IdCheck:
    """Every input id in [0, total) exactly once: a duplicate fails at once, a gap at `finish`, both
    before the output is renamed into place (retries make either impossible; checked, not trusted)."""

    def __init__(self, total: int) -> None:
        self.seen = np.zeros(total, dtype=bool)

    def add(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.seen.size):
            raise DFDError(f"scan produced an unknown input id (one of {ids.min()}..{ids.max()})")
        repeated = ids[self.seen[ids]]  # seen in an earlier batch
        if not repeated.size:
            unique, counts = np.unique(ids, return_counts=True)
            repeated = unique[counts > 1]  # twice in this batch
        if repeated.size:
            raise DFDError(f"scan produced input id {int(repeated[0])} twice")
        self.seen[ids] = True

    def finish(self) -> None:
        missing = np.flatnonzero(~self.seen)
        if missing.size:
            raise DFDError(f"scan produced no row for {missing.size} inputs (first id {int(missing[0])})")


@contextmanager
def _quiet_ray_data() -> Iterator[None]:
    """No Ray Data progress bars or INFO lines during a scan (ours counts images, not blocks, and
    their lines would break it); the process-wide settings are restored afterwards."""
    from ray.data import DataContext

    context = DataContext.get_current()
    bars = context.enable_progress_bars
    loggers = {name: logging.getLogger(name) for name in ("ray.data", "ray.data._internal.progress")}
    levels = {name: logger.level for name, logger in loggers.items()}
    context.enable_progress_bars = False
    loggers["ray.data"].setLevel(logging.WARNING)
    loggers["ray.data._internal.progress"].setLevel(logging.ERROR)
    try:
        yield
    finally:
        context.enable_progress_bars = bars
        for name, logger in loggers.items():
            logger.setLevel(levels[name])


def scan(sources: list[str], output: str | os.PathLike[str], config: ScanConfig | None = None, *,
         classifier: type[Classifier] = Classifier) -> ScanSummary:
    """Score every image in `sources` on Ray; write `output` (Parquet) and return the summary.
    `classifier` may be a subclass of stages.Classifier (to post-process rows, or in tests)."""
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from deepfake_detection.raycluster import import_ray, ray_session

    config = config or ScanConfig()
    if is_stdout(output):
        raise OutputError("dfd scan writes a Parquet file: name one with --output FILE")
    check_writable(output)  # before any work: a bad output path must not cost a scan
    for stale in remove_stale_temporaries(output):  # left by a scan that was killed
        log.info("removed %s, the temporary file of a scan that did not finish", stale)
    import_ray()  # the missing extra is reported before any listing work
    skipped: list[str] = []
    items = list_inputs(sources, allow_outside_listing=config.allow_outside_listing, skipped_videos=skipped)
    summary = ScanSummary(output=str(output), skipped_videos=len(skipped))
    if not items:
        more = f" ({len(skipped)} videos skipped: score videos with dfd detect)" if skipped else ""
        raise DFDError(f"no image found in the given sources{more}")
    model_path = _model_file(config)
    inputs = input_table(items)
    with ray_session(config.ray_address) as ray, _quiet_ray_data():
        from deepfake_detection.models.paths import weights_for

        resources = ray.cluster_resources()
        torch_weights = weights_for(Path(model_path)) is not None
        actors = _actors(config, resources, torch_weights=torch_weights)
        log.info("scan: %d inputs; classifiers %s", len(items), actors)
        device, threads = actors.pop("device"), actors.pop("threads")
        # Blocks sliced here, all full but the last: Ray Data would merge blocks smaller than batch_size.
        rows = _block_rows(len(items), config.images_per_task, int(resources.get("CPU", 1)))
        ds = ray.data.from_arrow([inputs.slice(i, rows) for i in range(0, len(items), rows)])
        # A task whose worker dies runs again (Ray's default, 3 times). A dead classifier actor is
        # restarted and its batch retried, a bounded number of times: Ray Data's default (-1, forever)
        # would loop on a batch that always crashes its actor. (Ray 2.60, pinned, takes max_restarts and
        # max_task_retries only as ray_remote_args, which it marks deprecated.)
        ds = ds.map_batches(detect_batch, batch_format="pyarrow", batch_size=config.images_per_task,
                            num_cpus=1, fn_kwargs={"model": model_path, "backend": config.backend,
                                                   "detector": config.detector,
                                                   "max_pixels": config.max_pixels})
        ds = ds.map_batches(classifier, batch_format="pyarrow", batch_size=config.batch_size,
                            fn_constructor_kwargs={"model": model_path, "backend": config.backend,
                                                   "threshold": config.threshold, "detector": config.detector,
                                                   "batch_size": config.batch_size, "threads": threads,
                                                   "device": device},
                            compute=ray.data.ActorPoolStrategy(size=actors.pop("concurrency")),
                            max_restarts=MAX_ACTOR_RESTARTS, max_task_retries=config.max_retries, **actors)
        start = time.perf_counter()
        bar = tqdm(total=len(items), unit="img", disable=not config.progress, file=sys.stderr,
                   dynamic_ncols=True, desc="scan")
        ids = IdCheck(len(items))
        try:
            with atomic_path(output) as tmp, \
                    pq.ParquetWriter(tmp, RESULT_SCHEMA, compression="zstd") as writer:
                for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                    table = table.select(RESULT_SCHEMA.names).cast(RESULT_SCHEMA)
                    ids.add(table["id"].to_numpy())
                    writer.write_table(table)
                    summary.add(table)
                    bar.update(table.num_rows)
                ids.finish()
        except DFDError as exc:
            raise DFDError(f"{exc}; {output} was left as it was") from None
        except ray.exceptions.RayError as exc:  # retries spent (a batch that kills its actor), a bug
            raise DFDError(f"the scan failed ({_root_cause(exc)}; a batch whose classifier actor dies is "
                           f"retried {config.max_retries} times); {output} was left as it was") from None
        finally:
            bar.close()
        summary.seconds = time.perf_counter() - start
    return summary
