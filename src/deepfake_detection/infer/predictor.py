"""Predictor: image -> faces -> crops -> calibrated fake probabilities -> ImageResult.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deepfake_detection.errors import DFDError
from deepfake_detection.faces import Face, FaceDetector, create_detector, crop_faces
from deepfake_detection.infer.backends import Backend, crop_probabilities, load_backend
from deepfake_detection.infer.bundled import default_model_path
from deepfake_detection.infer.results import FaceResult, ImageResult, VideoResult
from deepfake_detection.io.images import DEFAULT_MAX_PIXELS, load_image
from deepfake_detection.io.sources import InputItem
from deepfake_detection.models.spec import ModelSpec
from deepfake_detection.runtime import available_cores

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """What a worker hands to the classifier: everything but the scores."""

    path: str | None
    faces: list[Face] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    whole_image: np.ndarray | None = None  # model-sized copy of the frame, when no face was found
    image_size: tuple[int, int] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    video: bool = False  # a video file: scored by predict_video, in input order


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


# --- the two halves of a prediction, shared with `dfd scan` (which runs them in different processes) --

def model_info(spec: ModelSpec, backend: Backend) -> dict[str, str]:
    return {"name": spec.name or spec.arch, "arch": spec.arch, "sha256": backend.sha256,
            "backend": backend.name}


def prepare_image(source: Any, path: str | None, detector: FaceDetector, spec: ModelSpec, *,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> Prepared:
    """Decode, detect and crop one image; never raises for bad input."""
    prepared = Prepared(path)
    try:
        start = time.perf_counter()
        image = load_image(source, max_pixels=max_pixels)  # arrays are taken as RGB
        prepared.timings_ms["decode"] = _ms(start)
        prepared.image_size = (int(image.shape[1]), int(image.shape[0]))
        start = time.perf_counter()
        prepared.faces = detector.detect(image)
        prepared.timings_ms["detect"] = _ms(start)
        start = time.perf_counter()
        size = spec.input_size
        prepared.crops = crop_faces(image, prepared.faces, size, spec.crop)
        if not prepared.faces and spec.whole_image:
            prepared.whole_image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        prepared.timings_ms["crop"] = _ms(start)
    except DFDError as exc:
        prepared.error = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a bug or an unexpected library error must not stop a batch
        log.exception("unexpected error on %s", path)
        prepared.error = f"internal error ({type(exc).__name__}): {exc}"
    return prepared


def finish_results(batch: list[Prepared], backend: Backend, spec: ModelSpec, *,
                   batch_size: int = 32) -> list[ImageResult]:
    """Classify the crops of several prepared images in one go and build their results."""
    crops: list[np.ndarray] = []
    for p in batch:
        crops.extend(p.crops if p.faces else ([p.whole_image] if p.whole_image is not None else []))
    start = time.perf_counter()
    probs = crop_probabilities(backend, crops, batch_size=batch_size)
    per_crop_ms = _ms(start) / max(len(crops), 1)
    info = model_info(spec, backend)
    results, cursor = [], 0
    for p in batch:
        result = ImageResult(path=p.path, status="error", threshold=spec.threshold,
                             model=info, image_size=p.image_size, timings_ms=p.timings_ms)
        if p.error is not None:
            result.error = p.error
        elif p.faces:
            scores = probs[cursor : cursor + len(p.faces)]
            cursor += len(p.faces)
            result.faces = [
                FaceResult(box=[float(v) for v in f.box], detector_score=float(f.score),
                           fake_probability=float(s),
                           landmarks=None if f.landmarks is None else f.landmarks.tolist())
                for f, s in zip(p.faces, scores, strict=True)
            ]
            result.status = "ok"
            result.fake_probability = float(scores.max())  # one fake face makes the image fake
            p.timings_ms["classify"] = per_crop_ms * len(p.faces)
        else:
            result.status = "no_face"
            if p.whole_image is not None:
                result.fake_probability = float(probs[cursor])
                cursor += 1
                p.timings_ms["classify"] = per_crop_ms
        p.timings_ms["total"] = sum(v for k, v in p.timings_ms.items() if k != "total")
        results.append(result)
    return results


class Predictor:
    def __init__(self, backend: Backend, detector: FaceDetector, *, batch_size: int = 32,
                 max_pixels: int = DEFAULT_MAX_PIXELS,
                 detector_factory: Callable[[], FaceDetector] | None = None) -> None:
        self.backend = backend
        self.detector = detector  # for single images: all cores on one detection
        self.spec = backend.spec
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        # Folder runs give each worker thread its own one-thread detector: stages then overlap
        # across cores instead of every stage fighting for all of them.
        self._detector_factory = detector_factory
        self._local = threading.local()

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, *, backend: str = "auto",
             detector: str = "auto", detector_options: dict[str, Any] | None = None,
             batch_size: int = 32) -> Predictor:
        """Load a model file (None: the bundled default, checksum-verified) and a face detector."""
        model_path = default_model_path() if path is None else Path(path)
        model = load_backend(model_path, kind=backend, require_checksum=path is None)  # type: ignore[arg-type]
        options = dict(detector_options or {})

        def one_thread_detector() -> FaceDetector:
            extra = {"threads": 1} if detector in ("auto", "retinaface") else {}
            return create_detector(detector, **{**extra, **options})

        return cls(model, create_detector(detector, **options), batch_size=batch_size,
                   detector_factory=one_thread_detector)

    @property
    def model_info(self) -> dict[str, str]:
        return model_info(self.spec, self.backend)

    # --- stages -------------------------------------------------------------------------------

    def worker_detector(self) -> FaceDetector:
        """This thread's own one-thread detector (made on first use; the shared one without a factory)."""
        if self._detector_factory is None:
            return self.detector
        detector = getattr(self._local, "detector", None)
        if detector is None:
            detector = self._local.detector = self._detector_factory()
        return detector

    def _prepare(self, source: Any, path: str | None, detector: FaceDetector | None = None) -> Prepared:
        return prepare_image(source, path, detector or self.detector, self.spec, max_pixels=self.max_pixels)

    def probabilities(self, crops: list[np.ndarray]) -> np.ndarray:
        """Calibrated fake probabilities for model-sized RGB crops, in batches."""
        return crop_probabilities(self.backend, crops, batch_size=self.batch_size)

    def _finish(self, batch: list[Prepared]) -> list[ImageResult]:
        return finish_results(batch, self.backend, self.spec, batch_size=self.batch_size)

    # --- public API -------------------------------------------------------------------------

    def predict(self, image: Any, *, path: str | None = None, worker: bool = False) -> ImageResult:
        """One image: a path, bytes, file object, RGB array or PIL image.

        worker=True when called from a pool thread: use that thread's own one-thread detector, so
        concurrent calls overlap across cores instead of all sharing one multi-threaded session."""
        return self.predict_batch([image], paths=[path], worker=worker)[0]

    def predict_batch(self, images: Sequence[Any], *, paths: Sequence[str | None] | None = None,
                      worker: bool = False) -> list[ImageResult]:
        """Several in-memory images, their faces classified together; a bad one gives an error result."""
        detector = self.worker_detector() if worker else None
        names = list(paths) if paths is not None else [None] * len(images)
        return self._finish([self._prepare(image, name, detector)
                             for image, name in zip(images, names, strict=True)])

    def predict_video(self, source: str | os.PathLike[str], *, frames: int | None = 32,
                      stride: int | None = None, progress: Callable[[int, int], None] | None = None,
                      path: str | None = None, detector: FaceDetector | None = None) -> VideoResult:
        """A video file: `frames` evenly spaced frames (or every `stride`-th), faces tracked across
        them, a robust video-level probability (see live/video_verdict.py). Never raises for bad
        input; `progress(done, total)` is called after each sampled frame. `detector`: one to use
        instead of the shared `self.detector` (from a pool thread: `self.worker_detector()`)."""
        from deepfake_detection.live.video_verdict import predict_video

        return predict_video(self, source, frames=frames, stride=stride, progress=progress, path=path,
                             detector=detector)

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
                    yield from self._finish(pending)
                    pending, pending_faces = [], 0
                    path = str(prepared.path)
                    report = None if video_progress is None else (
                        lambda done, total, p=path: video_progress(p, done, total))
                    yield self.predict_video(path, frames=video_frames, stride=video_stride, progress=report)
                    continue
                pending.append(prepared)
                pending_faces += max(len(prepared.faces), 1)
                # Classify when the batch is full or when waiting would leave the classifier idle.
                if pending_faces >= self.batch_size or not futures or not futures[0].done():
                    yield from self._finish(pending)
                    pending, pending_faces = [], 0

    def _prepare_item(self, item: InputItem) -> Prepared:
        error = item_error(item)
        if error is not None:
            return Prepared(item.path, error=error)
        if item.is_video:
            return Prepared(item.path, video=True)
        return self._prepare(item.path, item.path, self.worker_detector())


def item_error(item: InputItem) -> str | None:
    """The error record of an input that cannot be read at all (a missing file or glob)."""
    if item.error is not None:
        return item.error
    if item.missing:
        return "FileNotFoundError: no such file, folder or glob match"
    return None


# --- the snippet users of this field know --------------------------------------------------------

def load_model(path: str | os.PathLike[str] | None = None) -> Predictor:
    """`load_model('models/default.onnx')`: a Predictor (None: the bundled default)."""
    return Predictor.load(path)


def predict_image(model: Predictor, frame: np.ndarray) -> int:
    """1 if any face in the OpenCV BGR `frame` is judged a deepfake, else 0 (also when no face)."""
    rgb = load_image(frame, channel_order="bgr")
    return 1 if model.predict(rgb).label == "fake" else 0
