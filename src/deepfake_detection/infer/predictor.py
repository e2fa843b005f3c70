"""Predictor: the one inference contract. image -> faces -> crops -> calibrated fake probabilities.

`Predictor.load(model, threshold=..., max_pixels=..., detector=..., backend=...)` builds an immutable
predictor: one model, one spec (the threshold override applied), one detector choice. Every entry
point builds through it (`dfd detect`, `live`, `serve`, `scan`, `evaluate`).

Thread safety is the predictor's job. Face detectors are made per thread: a call that finds the
shared all-cores detector free uses it (lowest latency for a single request), any other thread
uses its own one-thread detector (made on first use), so concurrent calls overlap across cores and
no detector (OpenCV's cascade is not thread-safe) is ever used by two threads at once. The
classifier (an ONNX Runtime session) is safe to share.

Folders go through `predict_many`, which overlaps decoding and face detection (worker threads:
Pillow, OpenCV and ONNX Runtime release the GIL) with batched classification on the calling
thread, so the classifier sees full batches while the next images are being decoded.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from deepfake_detection.errors import DFDError
from deepfake_detection.faces import Face, FaceDetector, available_detectors, create_detector, crop_faces
from deepfake_detection.faces.base import DEFAULT_DETECTOR
from deepfake_detection.faces.quality import faces_sharpness
from deepfake_detection.infer.backends import Backend, crop_probabilities, load_backend
from deepfake_detection.infer.bundled import resolve_model
from deepfake_detection.infer.results import FaceResult, ImageResult, VideoResult, blurry_faces_warning
from deepfake_detection.io.images import DEFAULT_MAX_PIXELS, load_image
from deepfake_detection.io.sources import InputItem
from deepfake_detection.models.spec import ModelSpec
from deepfake_detection.runtime import available_cores

log = logging.getLogger(__name__)

# Builds a new face detector; `threads` is its intra-op thread count (None: all cores).
DetectorFactory = Callable[[int | None], FaceDetector]


def _detector_for(name: str, spec: ModelSpec) -> str:
    """"auto" means the detector the model's training crops were made with (its crop protocol) when
    that one is installed; another detector works but frames faces differently, so it is logged."""
    trained_on = spec.crop.detector
    if name == "auto" and trained_on != DEFAULT_DETECTOR and trained_on in available_detectors():
        return trained_on
    if name not in ("auto", trained_on):
        log.warning("model %s was trained on %s face boxes; %s frames faces differently",
                    spec.name or spec.arch, trained_on, name)
    return name


@dataclass
class Prepared:
    """What the first half of a prediction hands to the classifier: everything but the scores."""

    path: str | None
    faces: list[Face] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    sharpness: list[float] = field(default_factory=list)  # per crop (faces/quality.py)
    image_size: tuple[int, int] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    video: bool = False  # a video file: scored by predict_video, in input order


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def model_info(spec: ModelSpec, backend: Backend) -> dict[str, str]:
    return {"name": spec.name or spec.arch, "arch": spec.arch, "sha256": backend.sha256,
            "backend": backend.name}


def named_detector(name: str, options: dict[str, Any] | None = None) -> DetectorFactory:
    """A factory for a registered detector ("auto", "retinaface", "haar") with `options`."""
    def build(threads: int | None) -> FaceDetector:
        extra = {"threads": threads} if threads is not None and name in ("auto", "retinaface") else {}
        return create_detector(name, **{**extra, **(options or {})})

    build.__name__ = name
    return build


class Predictor:
    """Immutable: its settings are read-only properties; build another to change one."""

    def __init__(self, backend: Backend, *, detector: str | DetectorFactory = "auto",
                 threshold: float | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 batch_size: int = 32) -> None:
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise DFDError(f"threshold must lie in [0, 1], got {threshold}")
        if max_pixels < 1 or batch_size < 1:
            raise DFDError(f"max_pixels and batch_size must be >= 1, got {max_pixels} and {batch_size}")
        self._backend = backend
        self._spec = backend.spec if threshold is None else replace(backend.spec, threshold=float(threshold))
        self._max_pixels = int(max_pixels)
        self._batch_size = int(batch_size)
        if isinstance(detector, str):
            detector = named_detector(_detector_for(detector, self._spec))
        self._factory = detector
        self._shared = self._factory(None)  # built now: an unknown or unavailable detector fails at load
        # The registry name of what was built ("auto" resolves to retinaface, or haar as a fallback).
        built = getattr(self._shared, "name", "")
        self._detector_name = built or getattr(self._factory, "__name__", "custom")
        self._shared_lock = threading.Lock()
        self._local = threading.local()

    @classmethod
    def load(cls, model: str | os.PathLike[str] | None = None, *, threshold: float | None = None,
             max_pixels: int = DEFAULT_MAX_PIXELS, detector: str | DetectorFactory = "auto",
             backend: Literal["auto", "onnx", "torch"] = "auto", batch_size: int = 32,
             threads: int | None = None, device: str = "cpu") -> Predictor:
        """A model file or a bundled model's name (None: the default; bundled ones checksum-verified)
        with a face detector.

        threshold: replaces the spec's calibrated threshold (0..1). max_pixels: images with more are
        refused before decoding. detector: "auto", "retinaface", "haar" or a DetectorFactory.
        backend: which sibling file runs (see models/paths.py). threads: ONNX Runtime threads of the
        classifier (default: all cores). device: where PyTorch weights run ("cpu", "cuda")."""
        model_path, bundled = resolve_model(model)
        loaded = load_backend(model_path, kind=backend, threads=threads, device=device,
                              require_checksum=bundled)
        return cls(loaded, detector=detector, threshold=threshold, max_pixels=max_pixels,
                   batch_size=batch_size)

    # --- read-only settings -------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    @property
    def threshold(self) -> float:
        return self._spec.threshold

    @property
    def max_pixels(self) -> int:
        return self._max_pixels

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def detector_name(self) -> str:
        return self._detector_name

    @property
    def model_info(self) -> dict[str, str]:
        return model_info(self._spec, self._backend)

    # --- face detectors, one per thread -------------------------------------------------------

    def _own_detector(self) -> FaceDetector:
        """This thread's one-thread detector, made on first use."""
        detector = getattr(self._local, "detector", None)
        if detector is None:
            detector = self._local.detector = self._factory(1)
        return detector

    @contextmanager
    def _any_detector(self) -> Iterator[FaceDetector]:
        """The shared all-cores detector when no other thread is using it, else this thread's own."""
        if self._shared_lock.acquire(blocking=False):
            try:
                yield self._shared
            finally:
                self._shared_lock.release()
        else:
            yield self._own_detector()

    def detect_faces(self, image: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 image, biggest first, with this thread's own one-thread detector
        (for callers that run detection on threads of their own, as `dfd live` does)."""
        return self._own_detector().detect(image)

    # --- the two halves of a prediction (`dfd scan` runs them in different processes) --------

    def prepare(self, source: Any, path: str | None = None) -> Prepared:
        """Decode, detect and crop one image with this thread's own detector; never raises for bad input."""
        return self._prepare(source, path, self._own_detector())

    def _prepare(self, source: Any, path: str | None, detector: FaceDetector) -> Prepared:
        prepared = Prepared(path)
        try:
            start = time.perf_counter()
            image = load_image(source, max_pixels=self._max_pixels)  # arrays are taken as RGB
            prepared.timings_ms["decode"] = _ms(start)
            prepared.image_size = (int(image.shape[1]), int(image.shape[0]))
            start = time.perf_counter()
            prepared.faces = detector.detect(image)
            prepared.timings_ms["detect"] = _ms(start)
            start = time.perf_counter()
            prepared.crops = crop_faces(image, prepared.faces, self._spec.input_size, self._spec.crop)
            prepared.sharpness = faces_sharpness(image, prepared.faces, self._spec.crop, prepared.crops)
            prepared.timings_ms["crop"] = _ms(start)
        except DFDError as exc:
            prepared.error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug or an unexpected library error must not stop a batch
            log.exception("unexpected error on %s", path)
            prepared.error = f"internal error ({type(exc).__name__}): {exc}"
        return prepared

    def finish(self, batch: list[Prepared]) -> list[ImageResult]:
        """Classify the crops of several prepared images in one go and build their results."""
        crops = [crop for p in batch for crop in p.crops]
        start = time.perf_counter()
        probs = self.probabilities(crops)
        per_crop_ms = _ms(start) / max(len(crops), 1)
        info, threshold = self.model_info, self._spec.threshold
        results, cursor = [], 0
        for p in batch:
            result = ImageResult(path=p.path, status="error", threshold=threshold,
                                 model=info, image_size=p.image_size, timings_ms=p.timings_ms)
            if p.error is not None:
                result.error = p.error
            elif p.faces:
                scores = probs[cursor : cursor + len(p.faces)]
                cursor += len(p.faces)
                result.faces = [
                    FaceResult(box=[float(v) for v in f.box], detector_score=float(f.score),
                               fake_probability=float(s), sharpness=sharp,
                               landmarks=None if f.landmarks is None else f.landmarks.tolist())
                    for f, s, sharp in zip(p.faces, scores, p.sharpness, strict=True)
                ]
                if warning := blurry_faces_warning(result.faces):
                    result.warnings.append(warning)
                result.status = "ok"
                result.fake_probability = float(scores.max())  # one fake face makes the image fake
                p.timings_ms["classify"] = per_crop_ms * len(p.faces)
            else:
                result.status = "no_face"
            p.timings_ms["total"] = sum(v for k, v in p.timings_ms.items() if k != "total")
            results.append(result)
        return results

    def probabilities(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Calibrated fake probabilities for model-sized RGB crops, in batches."""
        return crop_probabilities(self._backend, crops, batch_size=self._batch_size)

    # --- public API -------------------------------------------------------------------------

    def predict(self, image: Any, *, path: str | None = None) -> ImageResult:
        """One image: a path, bytes, file object, RGB array or PIL image. Safe from any thread."""
        return self.predict_batch([image], paths=[path])[0]

    def predict_batch(self, images: Sequence[Any], *, paths: Sequence[str | None] | None = None
                      ) -> list[ImageResult]:
        """Several in-memory images, their faces classified together; a bad one gives an error result."""
        names = list(paths) if paths is not None else [None] * len(images)
        with self._any_detector() as detector:
            prepared = [self._prepare(image, name, detector)
                        for image, name in zip(images, names, strict=True)]
        return self.finish(prepared)

    def predict_video(self, source: str | os.PathLike[str], *, frames: int | None = 32,
                      stride: int | None = None, progress: Callable[[int, int], None] | None = None,
                      path: str | None = None) -> VideoResult:
        """A video file: `frames` evenly spaced frames (or every `stride`-th), faces tracked across
        them, a robust video-level probability (see infer/video.py). Never raises for bad input;
        `progress(done, total)` is called after each sampled frame. Safe from any thread."""
        from deepfake_detection.infer.video import predict_video

        with self._any_detector() as detector:
            return predict_video(self, detector, source, frames=frames, stride=stride, progress=progress,
                                 path=path)

    def predict_many(self, items: Iterable[InputItem | str], *, workers: int | None = None,
                     prefetch: int = 8, video_frames: int | None = 32, video_stride: int | None = None,
                     video_progress: Callable[[str, int, int], None] | None = None) -> Iterator[ImageResult]:
        """Results in input order; decoding/detection of later items overlaps classification.
        Videos get a VideoResult (`video_frames`/`video_stride` as in `predict_video`);
        `video_progress(path, done, total)` is called after each sampled frame of a video."""
        workers = workers or available_cores()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dfd-prepare") as pool:
            futures: deque[Future[Prepared]] = deque()
            iterator = iter(items)

            def submit_next() -> bool:
                item = next(iterator, None)
                if item is None:
                    return False
                futures.append(pool.submit(self._prepare_item, item if isinstance(item, InputItem)
                                           else InputItem(item)))
                return True

            for _ in range(max(prefetch, workers)):
                if not submit_next():
                    break
            pending: list[Prepared] = []
            pending_faces = 0
            while futures:
                prepared = futures.popleft().result()
                submit_next()
                if prepared.video:  # images before it first, then the video (it uses all cores)
                    yield from self.finish(pending)
                    pending, pending_faces = [], 0
                    path = str(prepared.path)
                    report = None if video_progress is None else (
                        lambda done, total, p=path: video_progress(p, done, total))
                    yield self.predict_video(path, frames=video_frames, stride=video_stride, progress=report)
                    continue
                pending.append(prepared)
                pending_faces += max(len(prepared.faces), 1)
                # Classify when the batch is full or when waiting would leave the classifier idle.
                if pending_faces >= self._batch_size or not futures or not futures[0].done():
                    yield from self.finish(pending)
                    pending, pending_faces = [], 0

    def _prepare_item(self, item: InputItem) -> Prepared:
        error = item_error(item)
        if error is not None:
            return Prepared(item.path, error=error)
        if item.is_video:
            return Prepared(item.path, video=True)
        return self.prepare(item.path, item.path)


def item_error(item: InputItem) -> str | None:
    """The error record of an input that cannot be read at all (a missing file or glob)."""
    if item.error is not None:
        return item.error
    if item.missing:
        return "FileNotFoundError: no such file, folder or glob match"
    return None


# --- the snippet users of this field know --------------------------------------------------------

def load_model(path: str | os.PathLike[str] | None = None) -> Predictor:
    """`load_model('my_model.onnx')`: a Predictor (None: the bundled default)."""
    return Predictor.load(path)


def predict_image(model: Predictor, frame: np.ndarray) -> int:
    """1 if any face in the OpenCV BGR `frame` is judged a deepfake, else 0 (also when no face)."""
    rgb = load_image(frame, channel_order="bgr")
    return 1 if model.predict(rgb).label == "fake" else 0
