"""`dfd prepare`: raw datasets -> face crops + a Parquet manifest, resumably, on all cores.

Work is cut into chunks of consecutive sources (the layouts list sources in a fixed order). A
worker process turns a chunk into crop files and records; the parent writes each finished chunk
as `parts/chunk-NNNNNN.parquet` (atomically). A restart with the same command skips the chunks
that have a part file, so an interrupted run ends with the same manifest. Finalisation joins the
parts, assigns group-aware splits, drops near-duplicates across splits from train, and writes the
manifest and the summary atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Generator, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from itertools import islice
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from deepfake_detection.data.types import CropRecord, SourceItem
from deepfake_detection.errors import DFDError
from deepfake_detection.io.atomic import atomic_path
from deepfake_detection.models.spec import CropProtocol

log = logging.getLogger(__name__)

CONFIG_FILE = "prepare.json"
MANIFEST_FILE = "manifest.parquet"


@dataclass
class PrepareConfig:
    crop_size: int = 256  # larger than model inputs (224) so training can crop at random
    crop_scale: float = 1.3
    align: bool = False
    frames: int = 32  # per video, evenly spaced
    stride: int | None = None  # every N-th frame instead of `frames`
    faces: Literal["biggest", "all"] = "biggest"
    cropped: bool = False  # inputs are face crops already: no detection
    # Tight face crops (the face fills the image, as in FF++ crop releases): pad each image with black
    # borders of `pad` x its longer side before detection, so the detector sees a whole face and the
    # crop protocol's margin is black beyond the original picture, as at a frame's edge.
    pad: float = 0.0
    landmarks68: bool = False  # also store dlib's 68 points (self-blending masks follow the jaw)
    detector: str = "auto"
    max_side: int = 640
    min_face: int = 32
    jpeg_quality: int = 95
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    leave_out_method: str | None = None
    dedup_distance: int = 4  # perceptual-hash bits; < 0 disables
    chunk_size: int | None = None  # sources per unit of resumable work; None: 256 with cropped, else 32
    layout: str = "auto"

    @property
    def sources_per_chunk(self) -> int:
        """Chunks of about half a second of work: crops are ~100x cheaper than detection or video."""
        return self.chunk_size or (256 if self.cropped else 32)

    @property
    def protocol(self) -> CropProtocol:
        return CropProtocol(scale=self.crop_scale, align=self.align)

    def work_key(self) -> dict[str, Any]:
        """The settings that change crops: a resumed run must use the same ones."""
        keys = ("crop_size", "crop_scale", "align", "frames", "stride", "faces", "cropped", "detector",
                "max_side", "min_face", "jpeg_quality", "layout", "landmarks68", "pad")
        return {**{k: getattr(self, k) for k in keys}, "chunk_size": self.sources_per_chunk}


@dataclass
class ChunkResult:
    chunk: int
    records: list[CropRecord] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)
    sources: int = 0
    frames: int = 0


# --- worker side ----------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}  # this worker process's settings and models, set by _init_worker


def _init_worker(config: PrepareConfig, out: str, parent: int | None = None) -> None:
    if parent is not None:  # a local pool: die with `dfd prepare`, even when it is killed (SIGKILL)
        from deepfake_detection.signals import die_with_parent

        die_with_parent(parent)
    cv2.setNumThreads(1)  # one process per core; threads inside would fight over the same cores
    _WORKER["config"], _WORKER["out"] = config, Path(out)
    if not config.cropped:
        from deepfake_detection.faces import create_detector

        _WORKER["detector"] = create_detector(config.detector, max_side=config.max_side,
                                              min_face=config.min_face, **_detector_threads(config.detector))
        if config.landmarks68:
            from deepfake_detection.faces.landmarks68 import Landmarks68

            _WORKER["landmarks68"] = Landmarks68()


def _detector_threads(name: str) -> dict[str, Any]:
    return {"threads": 1} if name in ("auto", "retinaface") else {}


def _write_crop(out: Path, key: str, crop: np.ndarray, quality: int) -> tuple[str, str]:
    bgr = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise DFDError("JPEG encoding failed")
    data = encoded.tobytes()
    name = hashlib.sha1(key.encode()).hexdigest()[:20]
    # 256 shards: 200,000 crops make ~800 files a folder (never 200,000 in one), and few mkdirs.
    relative = f"crops/{name[:2]}/{name}.jpg"
    target = out / relative
    # Every time (a cheap stat when it exists): a cache of made folders went stale when a run's output
    # folder was removed before the next run in the same process.
    target.parent.mkdir(parents=True, exist_ok=True)
    # A plain write: a crop only counts once its chunk's part file exists, so a crop cut short by a
    # crash is never referenced, and the resumed chunk writes it again.
    target.write_bytes(data)
    return relative, hashlib.sha256(data).hexdigest()


def _frames(item: SourceItem, config: PrepareConfig) -> Iterator[tuple[int, np.ndarray]]:
    from deepfake_detection.io.images import load_image
    from deepfake_detection.io.video import sample_frames

    if item.kind == "video":
        yield from sample_frames(item.path, count=config.frames, stride=config.stride)
    else:
        yield 0, pad_image(load_image(item.path), config.pad)


def pad_image(image: np.ndarray, pad: float) -> np.ndarray:
    """`image` inside black borders of `pad` x its longer side (PrepareConfig.pad); as is for pad 0."""
    if pad <= 0:
        return image
    p = round(pad * max(image.shape[:2]))
    return cv2.copyMakeBorder(image, p, p, p, p, cv2.BORDER_CONSTANT, value=(0, 0, 0))


def source_padding(manifest: str | Path) -> float:
    """The `pad` that `dfd prepare` used for the manifest's images (0 when not recorded)."""
    config = Path(manifest).with_name(CONFIG_FILE)
    try:
        return float(json.loads(config.read_text()).get("pad", 0.0))
    except (OSError, ValueError):
        return 0.0


def _to_crop(points: np.ndarray, m: np.ndarray) -> list[float]:
    """Points in frame pixels -> a flat list in crop pixels (the manifest's landmark format)."""
    return [round(float(v), 2) for v in (points @ m[:, :2].T + m[:, 2]).reshape(-1)]


def _process_source(item: SourceItem, result: ChunkResult) -> None:
    from deepfake_detection.data.dedup import perceptual_hash
    from deepfake_detection.faces import Face, crop_face, crop_transform

    config: PrepareConfig = _WORKER["config"]
    out: Path = _WORKER["out"]
    size = config.crop_size
    # The registry name of the detector actually built ("auto" may have fallen back to haar).
    detector_name = "none" if config.cropped else _WORKER["detector"].name
    found = 0
    for frame_index, frame in _frames(item, config):
        result.frames += 1
        if config.cropped:
            h, w = frame.shape[:2]
            faces = [Face(np.array([0, 0, w, h], np.float32), 1.0, None)]
            crops = [cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA if min(h, w) > size
                                else cv2.INTER_CUBIC)]
        else:
            faces = _WORKER["detector"].detect(frame)
            if config.faces == "biggest":
                faces = faces[:1]
            crops = [crop_face(frame, face, size, config.protocol) for face in faces]
        for face_index, (face, crop) in enumerate(zip(faces, crops, strict=True)):
            landmarks = landmarks68 = None
            if face.landmarks is not None:
                m = crop_transform(face, size, config.protocol)
                landmarks = _to_crop(face.landmarks, m)
                if "landmarks68" in _WORKER:
                    landmarks68 = _to_crop(_WORKER["landmarks68"](frame, face), m)
            relative, digest = _write_crop(out, f"{item.source_id}|{frame_index}|{face_index}", crop,
                                           config.jpeg_quality)
            result.records.append(CropRecord(
                crop_path=relative, source_path=item.path, source_id=item.source_id, frame_index=frame_index,
                face_index=face_index, box=[round(float(v), 1) for v in face.box], landmarks=landmarks,
                det_score=round(float(face.score), 4), label=item.label, method=item.method,
                dataset=item.dataset, group=item.group, content_hash=digest, phash=perceptual_hash(crop),
                crop_size=size, crop_protocol=config.protocol.version, crop_scale=config.crop_scale,
                crop_align=config.align, crop_detector=detector_name, split=item.official_split or "",
                landmarks68=landmarks68,
            ))
            found += 1
    if not found:
        result.no_face.append(item.path)


def _process_chunk(chunk: int, items: list[SourceItem]) -> ChunkResult:
    result = ChunkResult(chunk, sources=len(items))
    for item in items:
        try:
            _process_source(item, result)
        except DFDError as exc:
            result.failures.append({"path": item.path, "error": f"{type(exc).__name__}: {exc}"})
        except Exception as exc:  # one bad file never stops a run
            log.exception("unexpected failure on %s", item.path)
            result.failures.append({"path": item.path, "error": f"{type(exc).__name__}: {exc}"})
    return result


# --- parent side ----------------------------------------------------------------------------------

def _chunks(items: Iterable[SourceItem], size: int) -> Iterator[tuple[int, list[SourceItem]]]:
    iterator = iter(items)
    index = 0
    while batch := list(islice(iterator, size)):
        yield index, batch
        index += 1


def _part_path(out: Path, chunk: int) -> Path:
    return out / "parts" / f"chunk-{chunk:06d}.parquet"


def _save_part(out: Path, result: ChunkResult) -> None:
    """Records, failures and no-face sources of one chunk, in one atomically written Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from deepfake_detection.data.manifest import records_to_frame

    frame = records_to_frame(result.records)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = {"failures": result.failures, "no_face": result.no_face, "sources": result.sources,
            "frames": result.frames}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"dfd_chunk": json.dumps(meta)})
    with atomic_path(_part_path(out, result.chunk)) as tmp:  # a .tmp name: never matches *.parquet
        pq.write_table(table, tmp)


def _check_config(out: Path, config: PrepareConfig, roots: Sequence[str], *, write: bool = True) -> None:
    """Refuse to resume into a folder prepared with other crop settings (mixed crops); record the
    settings (`write`) once there is work to do."""
    path = out / CONFIG_FILE
    key = {"roots": [str(Path(r).resolve()) for r in roots], **config.work_key()}
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != key:
            raise DFDError(f"{out} was prepared with other settings ({path}); use a new --out folder")
        return
    if not write:
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(key, indent=2) + "\n")


def _on_processes(todo: list[tuple[int, list[SourceItem]]], config: PrepareConfig, out: Path,
                  workers: int) -> Generator[ChunkResult, None, None]:
    """Chunk results from a pool of local processes, as they finish (at most 2 per worker queued)."""
    context = get_context("spawn")  # no fork: the parent holds threads (progress bar, ONNX sessions)
    try:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                 initargs=(config, str(out), os.getpid())) as pool:
            pending: set[Future[ChunkResult]] = set()
            queue = iter(todo)
            for index, chunk in islice(queue, workers * 2):  # bounded: memory stays flat
                pending.add(pool.submit(_process_chunk, index, chunk))
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending.add(pool.submit(_process_chunk, *nxt))
    except BrokenProcessPool as exc:
        raise DFDError("a worker process died; finished chunks are kept in "
                       f"{out / 'parts'}: run the same command again to resume") from exc


def _ray_chunk(config: PrepareConfig, out: str, chunk: int, items: list[SourceItem]) -> ChunkResult:
    """A Ray task: the same per-chunk work as a local worker. Ray reuses worker processes, so the
    detector is built once per process and per configuration."""
    if _WORKER.get("config") != config or _WORKER.get("out") != Path(out):
        _WORKER.clear()
        _init_worker(config, out)
    return _process_chunk(chunk, items)


def _on_ray(todo: list[tuple[int, list[SourceItem]]], config: PrepareConfig, out: Path,
            address: str) -> Generator[ChunkResult, None, None]:
    """Chunk results from Ray tasks (one CPU each; a task whose worker dies is run again). Workers on
    other machines write crops under `out` too: it must be a folder every node sees (NFS, a mount)."""
    from deepfake_detection.raycluster import ray_session

    with ray_session(address) as ray:
        task = ray.remote(_ray_chunk).options(num_cpus=1, max_retries=3)
        in_flight = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
        queue = iter(todo)
        pending = [task.remote(config, str(out), index, chunk) for index, chunk in islice(queue, in_flight)]
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            try:
                result = ray.get(finished[0])
            except ray.exceptions.RayError as exc:  # retries spent, or the cluster went away
                raise DFDError(f"a Ray task failed ({type(exc).__name__}); finished chunks are kept in "
                               f"{out / 'parts'}: run the same command again to resume") from None
            yield result
            nxt = next(queue, None)
            if nxt is not None:
                pending.append(task.remote(config, str(out), *nxt))


def prepare(roots: Sequence[str], out: str | Path, config: PrepareConfig | None = None, *,
            workers: int | None = None, progress: bool = True, ray_address: str | None = None
            ) -> dict[str, Any]:
    """Run (or resume) preparation; return the summary (also saved as summary.json). With
    `ray_address` (a cluster address, or "local") the chunks run as Ray tasks instead of local
    processes: the same per-chunk function, so the same crops and manifest."""
    from tqdm import tqdm

    from deepfake_detection.data.layouts import iter_sources

    config = config or PrepareConfig()
    out = Path(out)
    _check_config(out, config, roots, write=False)  # a folder of other settings: refused before listing
    workers = workers or os.cpu_count() or 1
    listing_failures: list[dict[str, str]] = []  # refused dataset entries (bad CSV rows, path escapes)
    sources = list(iter_sources([Path(r) for r in roots], layout=config.layout,
                                on_failure=lambda where, why: listing_failures.append({"path": where,
                                                                                       "error": why})))
    if not sources:
        raise DFDError(f"no image or video found in {', '.join(map(str, roots))}")
    # Only now, with work to do: a wrong source leaves no settings behind to refuse the corrected run.
    _check_config(out, config, roots)
    todo = [(i, c) for i, c in _chunks(sources, config.sources_per_chunk) if not _part_path(out, i).exists()]
    done_sources = len(sources) - sum(len(c) for _, c in todo)
    bar = tqdm(total=len(sources), initial=done_sources, unit="src", disable=not progress,
               dynamic_ncols=True, desc="prepare")
    results = (_on_processes(todo, config, out, workers) if ray_address is None
               else _on_ray(todo, config, out, ray_address))
    try:
        for result in results:
            _save_part(out, result)
            bar.update(result.sources)
            bar.set_postfix(crops=len(result.records), refresh=False)
    finally:
        results.close()  # stops the pool or the Ray session now, also on errors and Ctrl-C
        bar.close()
    total_chunks = -(-len(sources) // config.sources_per_chunk)
    del sources, todo  # the source list is the largest object left: free it before joining parts
    return finalize(out, config, total_chunks=total_chunks, listing_failures=listing_failures)


# Columns that splitting, dedup and the summary need; the rest (boxes, landmarks) stays on disk and
# is streamed from the parts into the manifest, so memory does not grow with the crop count.
_LIGHT_COLUMNS = ["crop_path", "group", "label", "method", "dataset", "split", "phash"]


def _face_sides(table: Any) -> np.ndarray:
    import pyarrow.compute as pc

    if table.num_rows == 0:  # a chunk of unreadable or face-free sources: its columns are untyped
        return np.zeros(0, np.float32)
    boxes = pc.list_flatten(table.column("box")).to_numpy().reshape(-1, 4)
    return (boxes[:, 2:] - boxes[:, :2]).max(axis=1).astype(np.float32)


def finalize(out: Path, config: PrepareConfig, *, total_chunks: int,
             listing_failures: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Splits and cross-split dedup on the light columns of all parts; then the manifest is written
    part by part (atomically) and the summary from the light columns."""
    import pandas as pd
    import pyarrow.parquet as pq

    from deepfake_detection.data.dedup import remove_cross_split_duplicates
    from deepfake_detection.data.splits import assign_splits, check_no_leak
    from deepfake_detection.data.summary import write_summary

    parts = [_part_path(out, chunk) for chunk in range(total_chunks)]
    frames, sides, no_face, sources, sampled = [], [], [], 0, 0
    failures = list(listing_failures or [])
    for part in parts:
        table = pq.read_table(part, columns=_LIGHT_COLUMNS + ["box"])
        meta = json.loads(pq.read_schema(part).metadata[b"dfd_chunk"])
        failures += meta["failures"]
        no_face += meta["no_face"]
        sources += meta["sources"]
        sampled += meta["frames"]
        sides.append(_face_sides(table))
        frames.append(table.drop_columns(["box"]).to_pandas())
    df = pd.concat(frames, ignore_index=True)
    df["face_side"] = np.concatenate(sides) if sides else np.zeros(0, np.float32)
    removed = pd.DataFrame()
    if len(df):
        df = assign_splits(df, ratios=config.ratios, seed=config.seed,
                           leave_out_method=config.leave_out_method)
        if config.dedup_distance >= 0:
            df, removed = remove_cross_split_duplicates(df, max_distance=config.dedup_distance)
        check_no_leak(df)
    _write_manifest_from_parts(parts, df, out / MANIFEST_FILE)
    return write_summary(out, df, failures=failures, no_face=no_face, sources=sources, frames=sampled,
                         duplicates=removed, config=asdict(config))


def _write_manifest_from_parts(parts: list[Path], kept: Any, target: Path) -> None:
    """Stream every part into the manifest, keeping the rows of `kept` (indexed by row position in
    part order) with their assigned split; one part in memory at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from deepfake_detection.data.manifest import MANIFEST_SCHEMA

    total = sum(pq.read_metadata(part).num_rows for part in parts)
    keep = np.zeros(total, bool)
    keep[kept.index.to_numpy()] = True
    split = np.full(total, "", dtype=object)
    split[kept.index.to_numpy()] = kept["split"].astype(str).to_numpy()
    offset = 0
    with atomic_path(target, fsync=True) as tmp, \
            pq.ParquetWriter(tmp, MANIFEST_SCHEMA, compression="zstd") as writer:
        for part in parts:
            table = pq.read_table(part)
            rows = slice(offset, offset + table.num_rows)
            offset += table.num_rows
            table = table.filter(pa.array(keep[rows]))
            splits = pa.array(split[rows][keep[rows]].tolist(), type=pa.string())
            table = table.set_column(table.schema.get_field_index("split"), "split", splits)
            writer.write_table(table.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA))
