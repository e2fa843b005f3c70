"""The service: `create_app(settings)` builds the FastAPI app; its lifespan loads the model once.

Endpoints (OpenAPI at /openapi.json, browsable offline at /docs and /redoc): POST /v1/detect,
POST /v1/detect/batch, POST /v1/videos, GET /v1/jobs/{id}, GET /v1/recent, WS /v1/stream, GET /healthz,
/readyz, /metrics; pages / and /dashboard. Inference runs on a bounded worker pool (503 + Retry-After
when full); video jobs on their own one-worker pool so a long clip never blocks image requests.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import Depends, FastAPI, File, Query, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from deepfake_detection.errors import DFDError, ImageError, UnsupportedFormatError
from deepfake_detection.infer.predictor import Predictor
from deepfake_detection.infer.results import ImageResult
from deepfake_detection.io.images import VIDEO_EXTENSIONS, load_image
from deepfake_detection.io.video import sample_frames, video_info
from deepfake_detection.serve.apidocs import add_offline_docs
from deepfake_detection.serve.connections import AdmissionMiddleware
from deepfake_detection.serve.explain import Explainer, GradCam, OcclusionMap, explain
from deepfake_detection.serve.hosts import HostCheckMiddleware, allowed_hosts
from deepfake_detection.serve.jobs import JobStore
from deepfake_detection.serve.limits import (
    API_KEY_HEADER,
    IMAGE_TYPES,
    VIDEO_TYPES,
    BodyLimitMiddleware,
    GuardMiddleware,
    RateLimiter,
    check_api_key,
    check_media_type,
    check_origin,
    client_host,
)
from deepfake_detection.serve.metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from deepfake_detection.serve.settings import ServeSettings
from deepfake_detection.serve.workers import PoolFull, WorkerPool

log = logging.getLogger(__name__)
STATIC = files("deepfake_detection.serve") / "static"
RECENT = 50  # detections kept for the dashboard
SPARE_REQUESTS = 64  # admitted beyond workers + queues: pages, job polls, refusals answered by the app
MAX_STREAMS, STREAMS_PER_CLIENT = 64, 4  # live streams in all, and per client address
STREAM_PROTOCOL, STREAM_KEY_PREFIX = "dfd", "dfd-key."


def _busy() -> HTTPException:
    return HTTPException(503, "the service is at capacity; retry shortly", headers={"Retry-After": "1"})


def _named(message: str, name: str) -> str:
    """load_image names in-memory sources "<bytes>" or "<stream>": put the upload's name instead."""
    return re.sub(r"<(bytes|stream)>", lambda _: name, message, count=1)


def _image_error(exc: ImageError, name: str) -> HTTPException:
    """415 for data that is no supported image, 422 for a damaged or oversized one."""
    return HTTPException(415 if isinstance(exc, UnsupportedFormatError) else 422, _named(str(exc), name))


class Service:
    """Everything the endpoints share; built per app, filled by the lifespan."""

    def __init__(self, settings: ServeSettings, predictor: Predictor | None = None) -> None:
        if predictor is not None and settings.threshold not in (None, predictor.threshold):
            # A given predictor is used as it is: a threshold setting it does not carry would be ignored.
            raise ValueError(f"the given predictor's threshold is {predictor.threshold}, the settings "
                             f"ask for {settings.threshold}: build it with Predictor.load(threshold=...)")
        self.settings = settings
        self.metrics = Metrics()
        self.limiter = RateLimiter(settings.rate_limit)
        self.predictor = predictor  # injected (tests) or loaded at start-up
        self.cam: Explainer | None = None
        self.cam_weights: Path | None = None  # Grad-CAM's, loaded into `cam` by the first request asking
        self.cam_bundled = False  # the weights are a bundled model's: their checksum is required
        self.cam_reason = "explanations are off (--no-explain)"
        self._cam_lock = threading.Lock()
        self.hosts = allowed_hosts(settings.allowed_hosts, settings.host)
        self.pool = WorkerPool(settings.workers, settings.queue)
        self.video_pool = WorkerPool(1, settings.video_queue, name="dfd-video")
        self.jobs: JobStore | None = None
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.startup_error: str | None = None  # a user error (bad model path, ...) that stopped start-up
        self.metrics.bind(lambda: self.pool.queue_depth, lambda: self.pool.running,
                          lambda: self.jobs.counts() if self.jobs else {})

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        s = self.settings
        if self.predictor is None:
            self.predictor = Predictor.load(s.model, backend=s.backend, detector=s.detector,  # type: ignore[arg-type]
                                            threshold=s.threshold, max_pixels=s.max_pixels)
        info = self.predictor.model_info  # hashes the model file now, not during a request
        self.metrics.model.labels(info["name"], info["arch"], info["sha256"], info["backend"]).set(1)
        if s.explain:
            self._choose_explainer(self.predictor)
        self.jobs = JobStore(s.jobs_dir, s.job_ttl)

    def _choose_explainer(self, predictor: Predictor) -> None:
        """Grad-CAM when the model's PyTorch weights and PyTorch are there (one backward pass a face),
        loaded by the first request that asks for an explanation, so a service nobody asks for one
        stays small (PyTorch and the weights: about 800 MiB); else occlusion maps with the served model
        itself (no PyTorch; ~170 crops scored a face), ready at once."""
        import importlib.util

        from deepfake_detection.infer.bundled import resolve_model
        from deepfake_detection.models.paths import weights_for

        model_path, self.cam_bundled = resolve_model(self.settings.model)
        weights = weights_for(model_path)
        try:  # whether PyTorch is installed, without importing it (that is what loading lazily saves)
            has_torch = importlib.util.find_spec("torch") is not None
        except ValueError:  # sys.modules["torch"] is None: made unimportable on purpose
            has_torch = False
        if weights is None or not has_torch:  # the slim install: inference runs without PyTorch
            log.info("explanations: occlusion maps (Grad-CAM needs PyTorch weights and the 'train' extra)")
            self.cam = OcclusionMap(predictor)
            return
        self.cam_weights = weights

    @property
    def explain_available(self) -> bool:
        return self.cam is not None or self.cam_weights is not None

    @property
    def explain_method(self) -> str | None:
        if self.cam is not None:
            return self.cam.method
        return GradCam.method if self.cam_weights is not None else None

    def explainer(self) -> Explainer:
        """The explanation method; Grad-CAM is loaded here on first use (on a worker thread, once)."""
        with self._cam_lock:
            if self.cam is None:
                from deepfake_detection.models.paths import verify_checksum

                if self.cam_weights is None:
                    raise HTTPException(422, self.cam_reason)
                try:
                    if self.cam_bundled:
                        verify_checksum(self.cam_weights, required=True)
                    self.cam = GradCam.from_file(self.cam_weights)
                except (DFDError, ImportError) as exc:  # bad weights, a broken PyTorch: the served model
                    log.error("Grad-CAM unavailable (%s); explanations use occlusion maps", exc)
                    self.cam = OcclusionMap(self.need()[0])
                self.cam_weights = None
            return self.cam

    def close(self) -> None:
        self.pool.shutdown()
        self.video_pool.shutdown()
        if self.jobs is not None:
            self.jobs.close()

    @property
    def ready(self) -> bool:
        return self.predictor is not None and self.jobs is not None

    def need(self) -> tuple[Predictor, JobStore]:
        if self.predictor is None or self.jobs is None:
            raise HTTPException(503, "the model is still loading", headers={"Retry-After": "1"})
        return self.predictor, self.jobs

    # --- work done on pool threads ------------------------------------------------------------

    def _record(self, result: ImageResult, source: str, start: float) -> None:
        self.metrics.observe_result(result, source)
        self.recent.appendleft({
            "time": time.time(), "source": source, "name": result.path, "status": result.status,
            "label": result.label, "fake_probability": result.fake_probability, "faces": len(result.faces),
            "latency_ms": round((time.perf_counter() - start) * 1000, 1),
        })

    def detect_image(self, data: bytes | BinaryIO, name: str, *, source: str = "upload",
                     with_explanation: bool = False) -> dict[str, Any]:
        """Decode (raises ImageError), detect, score; the `dfd detect` result dict. Uploads come as
        their spooled files and are read here, on the worker: only admitted requests hold image
        bytes in memory."""
        predictor, _ = self.need()
        start = time.perf_counter()
        limits = self.settings
        image = load_image(data, max_pixels=limits.max_pixels, max_bytes=limits.max_upload_bytes)
        result = predictor.predict(image, path=name)  # thread-safe: the predictor picks the detector
        out = result.to_dict()
        if with_explanation and result.faces:
            out["explanations"] = explain(self.explainer(), image, result)
        self._record(result, source, start)
        return out

    def detect_batch(self, items: list[tuple[str, BinaryIO | None, str | None]]) -> list[dict[str, Any]]:
        """(name, data, refusal) per upload; refused or undecodable items get error results."""
        predictor, _ = self.need()
        start = time.perf_counter()
        accepted = [(name, data) for name, data, refusal in items if refusal is None and data is not None]
        scored = iter(predictor.predict_batch([d for _, d in accepted], paths=[n for n, _ in accepted]))
        out = []
        for name, _, refusal in items:
            if refusal is not None:
                out.append(ImageResult(path=name, status="error", threshold=predictor.spec.threshold,
                                       model=predictor.model_info, error=refusal).to_dict())
                continue
            result = next(scored)
            if result.error:
                result.error = _named(result.error, name)
            self._record(result, "batch", start)
            out.append(result.to_dict())
        return out

    def run_video(self, job_id: str, clip: Path, name: str) -> None:
        predictor, jobs = self.need()
        start = time.perf_counter()
        jobs.start(job_id)
        try:
            result = predictor.predict_video(
                str(clip), frames=self.settings.video_frames, path=name,
                progress=lambda done, total: jobs.progress(job_id, done, total))
            error = None
            if result.status == "error":
                error = self._job_error(job_id, result.error or "", clip, name)
            jobs.finish(job_id, result.to_dict() | {"error": error}, error=error)
            self._record(result, "video", start)
        except DFDError as exc:
            jobs.fail(job_id, self._job_error(job_id, f"{type(exc).__name__}: {exc}", clip, name))
        except Exception as exc:  # a bug must fail the job, not leave it running for ever
            log.exception("video job %s failed", job_id)
            jobs.fail(job_id, f"internal error ({type(exc).__name__})")
        finally:
            clip.unlink(missing_ok=True)

    def _job_error(self, job_id: str, message: str, clip: Path, name: str) -> str:
        """What the client sees of a failed job: the reason with the upload's name, never a server
        path or an internal error's text (the full message goes to the log)."""
        log.warning("video job %s (%s) failed: %s", job_id, name, message)
        shown = message.replace(str(clip), name)
        if shown.startswith("internal error") or str(self.settings.jobs_dir) in shown:
            return "the clip could not be processed (the reason is in the service log)"
        return shown


def _check_clip(path: Path, max_pixels: int) -> None:
    """Raises ImageError unless the clip's declared frame size is within the pixel limit (checked
    before anything is decoded) and OpenCV decodes a first frame: bad uploads are refused at once."""
    info = video_info(str(path), max_pixels=max_pixels)
    next(iter(sample_frames(str(path), count=1, info=info)))


def create_app(settings: ServeSettings | None = None, *, predictor: Predictor | None = None) -> FastAPI:
    """The app; `predictor` replaces the one loaded from settings (tests inject small fakes)."""
    settings = settings or ServeSettings()
    service = Service(settings, predictor)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            await asyncio.to_thread(service.start)
        except DFDError as exc:
            service.startup_error = f"{type(exc).__name__}: {exc}"
            log.error("dfd serve cannot start: %s", service.startup_error)
            raise
        sweeper = asyncio.create_task(_expire_jobs(service))
        try:
            yield
        finally:
            sweeper.cancel()
            service.close()

    app = FastAPI(title="deepfake-detection", version=version("deepfake-detection"), lifespan=lifespan,
                  docs_url=None, redoc_url=None,  # add_offline_docs serves them without a CDN
                  description="Tell real face images from deepfakes. Results carry the same fields as "
                              "the JSONL of `dfd detect`.")
    app.state.service = service

    # The API key and the rate limit are checked by GuardMiddleware, before any upload is read; this
    # only documents the header in the OpenAPI schema.
    protected = [Depends(APIKeyHeader(name=API_KEY_HEADER, auto_error=False))]

    @app.post("/v1/detect", dependencies=protected, tags=["detect"])
    async def detect(
        file: Annotated[UploadFile, File(description="one image (JPEG, PNG, WebP, BMP, TIFF, GIF)")],
        explain_faces: Annotated[bool, Query(alias="explain", description="heatmaps per face (Grad-CAM "
                                                     "or occlusion)")] = False,
    ) -> dict[str, Any]:
        """One image -> its result (the fields of `dfd detect --format jsonl`), faces with boxes."""
        check_media_type(file.content_type, IMAGE_TYPES, "an image")
        if explain_faces and not service.explain_available:
            raise HTTPException(422, service.cam_reason)
        name = file.filename or "upload"
        try:
            return await service.pool.run(
                lambda: service.detect_image(file.file, name, with_explanation=explain_faces))
        except PoolFull:
            raise _busy() from None
        except ImageError as exc:
            raise _image_error(exc, name) from None

    @app.post("/v1/detect/batch", dependencies=protected, tags=["detect"])
    async def detect_batch(files: Annotated[list[UploadFile], File(description="several images")]
                           ) -> dict[str, Any]:
        """Several images -> {"results": [...]} in upload order; a bad image gets an error result."""
        if len(files) > settings.max_batch:
            raise HTTPException(413, f"{len(files)} images in one batch; at most {settings.max_batch}")
        items: list[tuple[str, BinaryIO | None, str | None]] = []
        for i, upload in enumerate(files):
            name = upload.filename or f"upload-{i}"
            try:
                check_media_type(upload.content_type, IMAGE_TYPES, "an image")
            except HTTPException as exc:
                items.append((name, None, f"UnsupportedFormatError: {exc.detail}"))
                continue
            items.append((name, upload.file, None))
        try:
            return {"results": await service.pool.run(service.detect_batch, items)}
        except PoolFull:
            raise _busy() from None

    @app.post("/v1/videos", dependencies=protected, status_code=202, tags=["video"])
    async def submit_video(file: Annotated[UploadFile, File(description="a clip (MP4, MOV, AVI, MKV, WebM)")]
                           ) -> dict[str, Any]:
        """A clip -> a job id at once; poll GET /v1/jobs/{id} for progress and the verdict."""
        _, jobs = service.need()
        name = file.filename or "clip"
        suffix = Path(name).suffix.lower()
        if suffix not in VIDEO_EXTENSIONS:
            check_media_type(file.content_type, VIDEO_TYPES - {"application/octet-stream"}, "a clip")
            suffix = ".mp4"
        try:  # a slot first: only admitted uploads are copied and decoded
            slot = service.video_pool.reserve()
        except PoolFull:
            raise _busy() from None
        with slot:
            job_id = jobs.create(name)
            clip = jobs.upload_path(job_id, suffix)
            try:
                with clip.open("wb") as out:
                    await asyncio.to_thread(shutil.copyfileobj, file.file, out)
                await asyncio.to_thread(_check_clip, clip, settings.max_pixels)
                slot.submit(service.run_video, job_id, clip, name)
            except BaseException as exc:
                clip.unlink(missing_ok=True)
                jobs.delete(job_id)
                if isinstance(exc, ImageError):
                    raise HTTPException(422, str(exc).replace(str(clip), name)) from None
                raise
        return {"id": job_id, "state": "queued", "url": f"/v1/jobs/{job_id}"}

    @app.get("/v1/jobs/{job_id}", dependencies=protected, tags=["video"])
    async def job(job_id: str) -> dict[str, Any]:
        """A video job: state (queued, running, done, error), progress, and the result when done."""
        _, jobs = service.need()
        found = jobs.get(job_id) if len(job_id) == 32 and job_id.isalnum() else None
        if found is None:
            raise HTTPException(404, f"no job {job_id!r} (finished jobs expire after {settings.job_ttl:g} s)")
        return found

    @app.get("/v1/recent", dependencies=protected, tags=["monitoring"])
    async def recent() -> dict[str, Any]:
        """The latest detections (no image data): what the dashboard lists."""
        return {"detections": list(service.recent)}

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket) -> None:
        await _stream(ws, service)

    @app.get("/healthz", tags=["monitoring"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["monitoring"])
    async def readyz() -> JSONResponse:
        """Ready when the model is loaded: its name and sha256."""
        if not service.ready or service.predictor is None:
            return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "1"})
        return JSONResponse({"status": "ready", "model": service.predictor.model_info,
                             "explain": service.explain_available, "explain_method": service.explain_method})

    @app.get("/metrics", tags=["monitoring"])
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(str(STATIC / "dashboard.html"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    add_offline_docs(app)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # The trace goes to the log, not the client; exc_info explicit: this is not an `except` block.
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    # Outermost last: metrics see every response (refusals included), the Host check runs first, the
    # admission limit before any upload is read, the body limit before any parsing.
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_upload_bytes)
    app.add_middleware(GuardMiddleware, api_key=settings.api_key_text, limiter=service.limiter)
    if settings.cors:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors, allow_methods=["GET", "POST"],
                           allow_headers=[API_KEY_HEADER, "Content-Type"])
    app.add_middleware(AdmissionMiddleware, capacity=settings.workers + settings.queue + settings.video_queue
                       + SPARE_REQUESTS, streams=MAX_STREAMS, streams_per_client=STREAMS_PER_CLIENT)
    app.add_middleware(HostCheckMiddleware, allowed=service.hosts)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics, router_app=app)
    return app


async def _expire_jobs(service: Service) -> None:
    interval = min(service.settings.job_ttl / 2, 60.0)
    while True:
        await asyncio.sleep(interval)
        if service.jobs is not None:
            await asyncio.to_thread(service.jobs.expire)


async def _stream(ws: WebSocket, service: Service) -> None:
    """Live frames: binary JPEG messages in, one JSON message per processed frame out.

    Only the newest unprocessed frame is kept: a frame that arrives while another waits replaces it
    (counted as dropped), so a fast sender never builds a queue.

    The API key comes in the X-API-Key header or, from browsers (which cannot set WebSocket headers),
    as a subprotocol "dfd-key.<KEY>" offered beside "dfd": never in the URL, which access logs keep."""
    settings = service.settings
    offered = list(ws.scope.get("subprotocols") or [])
    key = ws.headers.get(API_KEY_HEADER) or next(
        (p.removeprefix(STREAM_KEY_PREFIX) for p in offered if p.startswith(STREAM_KEY_PREFIX)), None)
    try:
        service.limiter.check(client_host(ws.scope))  # first: wrong keys use up tokens too
        check_origin(ws.headers.get("origin"), ws.headers.get("host"), settings.cors, service.hosts)
        check_api_key(settings.api_key_text, key)
    except HTTPException as exc:
        # Accepted, then closed with 1008 and the reason (closing before accepting is a bare HTTP 403).
        await ws.accept(subprotocol=STREAM_PROTOCOL if STREAM_PROTOCOL in offered else None)
        await ws.close(code=1008, reason=str(exc.detail)[:120])
        return
    await ws.accept(subprotocol=STREAM_PROTOCOL if STREAM_PROTOCOL in offered else None)
    pending: tuple[int, bytes] | None = None
    arrived = asyncio.Event()
    closed = False
    received = dropped = 0

    async def receive() -> None:
        nonlocal pending, closed, received, dropped
        try:
            while True:
                try:  # a stream that sends nothing holds a connection for nothing
                    message = await asyncio.wait_for(ws.receive(), settings.stream_idle_timeout)
                except TimeoutError:
                    service.metrics.connections_closed.labels("stream_idle").inc()
                    await ws.close(code=1001, reason=f"no frame for {settings.stream_idle_timeout:g} s")
                    break
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes")
                if not data:
                    continue  # text messages are ignored
                if pending is not None:
                    dropped += 1
                    service.metrics.stream_dropped.inc()
                pending = (received, data)
                received += 1
                arrived.set()
        finally:
            closed = True
            arrived.set()

    receiver = asyncio.create_task(receive())
    try:
        while True:
            await arrived.wait()
            arrived.clear()
            if closed:
                break
            if pending is None:
                continue
            (index, data), pending = pending, None
            reply: dict[str, Any] = {"frame": index, "dropped": dropped}
            if len(data) > settings.max_upload_bytes:
                reply["error"] = "frame is over the upload limit"
            else:
                try:
                    reply["result"] = await service.pool.run(
                        lambda d=data, i=index: service.detect_image(d, f"frame-{i}", source="stream"))
                except PoolFull:
                    reply["error"] = "busy"
                except ImageError as exc:
                    reply["error"] = _named(str(exc), f"frame {index}")
            await ws.send_json(reply)
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went away mid-send
    finally:
        receiver.cancel()

