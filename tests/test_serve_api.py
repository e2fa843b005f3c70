"""`dfd serve` API: every endpoint and every error code, through Starlette's TestClient (lifespan on)."""

from __future__ import annotations

import base64
import io
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from deepfake_detection.infer.predictor import Predictor  # noqa: E402
from deepfake_detection.serve import ServeSettings, create_app  # noqa: E402
from deepfake_detection.serve.jobs import JobStore  # noqa: E402


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load()  # the bundled model, loaded once for every app of this module


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def face_jpeg(astronaut: np.ndarray) -> bytes:
    return jpeg(cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA))


@pytest.fixture(scope="module")
def no_face_jpeg() -> bytes:
    rng = np.random.default_rng(0)
    return jpeg(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels but carries almost no data (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(
        b"IEND", b"")


@pytest.fixture
def make_client(tmp_path: Path, predictor: Predictor) -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        # Each app its own jobs folder unless told (one service holds a folder at a time).
        # TestClient's WebSockets always send Host: testserver, which the Host check (DNS rebinding)
        # refuses unless allowed.
        options: dict[str, Any] = {"jobs_dir": tmp_path / f"jobs-{len(clients)}", "explain": False,
                                   "workers": 2, "allowed_hosts": ["testserver"], **overrides}
        client = TestClient(create_app(ServeSettings(**options), predictor=predictor),
                            raise_server_exceptions=False)
        client.__enter__()  # runs the lifespan
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def upload(data: bytes, name: str = "face.jpg", kind: str = "image/jpeg") -> dict[str, Any]:
    return {"file": (name, data, kind)}


# --- detection --------------------------------------------------------------------------------------

def test_detect_returns_the_dfd_detect_result_with_boxes(make_client: Any, face_jpeg: bytes,
                                                          predictor: Predictor) -> None:
    client = make_client()
    response = client.post("/v1/detect", files=upload(face_jpeg))
    assert response.status_code == 200
    body = response.json()
    expected = predictor.predict(face_jpeg, path="face.jpg").to_dict()
    assert set(body) == set(expected)  # the same result fields as `dfd detect`'s JSONL
    assert body["status"] == "ok" and body["path"] == "face.jpg" and body["image_size"] == [256, 256]
    assert len(body["faces"]) == 1
    x1, y1, x2, y2 = body["faces"][0]["box"]
    assert 0 <= x1 < x2 <= 256 and 0 <= y1 < y2 <= 256
    assert body["fake_probability"] == pytest.approx(expected["fake_probability"], abs=1e-4)
    assert body["label"] in ("fake", "real")


def test_detect_without_a_face(make_client: Any, no_face_jpeg: bytes) -> None:
    body = make_client().post("/v1/detect", files=upload(no_face_jpeg, "noise.jpg")).json()
    assert body["status"] == "no_face" and body["faces"] == []


def test_batch_scores_each_image_and_reports_bad_ones_in_place(make_client: Any, face_jpeg: bytes,
                                                               no_face_jpeg: bytes) -> None:
    files = [("files", ("a.jpg", face_jpeg, "image/jpeg")),
             ("files", ("notes.txt", b"hello", "text/plain")),
             ("files", ("broken.jpg", face_jpeg[:500], "image/jpeg")),
             ("files", ("b.jpg", no_face_jpeg, "image/jpeg"))]
    response = make_client().post("/v1/detect/batch", files=files)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["path"] for r in results] == ["a.jpg", "notes.txt", "broken.jpg", "b.jpg"]
    assert [r["status"] for r in results] == ["ok", "error", "error", "no_face"]
    assert "unsupported media type" in results[1]["error"]
    assert results[2]["error"].startswith("CorruptImageError: broken.jpg")


def test_batch_over_the_image_count_limit_is_413(make_client: Any, face_jpeg: bytes) -> None:
    files = [("files", (f"{i}.jpg", face_jpeg, "image/jpeg")) for i in range(3)]
    response = make_client(max_batch=2).post("/v1/detect/batch", files=files)
    assert response.status_code == 413 and "at most 2" in response.json()["detail"]


def test_explanation_gives_one_heatmap_per_face(make_client: Any, face_jpeg: bytes) -> None:
    client = make_client(explain=True)
    assert client.get("/readyz").json()["explain"] is True
    plain = client.post("/v1/detect", files=upload(face_jpeg)).json()
    assert "explanations" not in plain
    body = client.post("/v1/detect?explain=true", files=upload(face_jpeg)).json()
    (explanation,) = body["explanations"]
    assert explanation["face"] == 0
    x1, y1, x2, y2 = explanation["box"]
    fx1, fy1, fx2, fy2 = body["faces"][0]["box"]
    assert x1 <= fx1 and y1 <= fy1 and x2 >= fx2 and y2 >= fy2  # the crop square holds the face box
    assert explanation["heatmap"].startswith("data:image/png;base64,")
    png = base64.b64decode(explanation["heatmap"].split(",", 1)[1])
    heat = np.asarray(Image.open(io.BytesIO(png)))
    side = client.app.state.service.predictor.spec.input_size
    assert heat.shape == (side, side, 4)  # one value per model input pixel
    assert heat[:, :, 3].max() > 150 and heat[:, :, 3].min() < heat[:, :, 3].max()  # it localises


def test_explanation_when_the_weights_are_missing_is_422(make_client: Any, face_jpeg: bytes) -> None:
    response = make_client(explain=False).post("/v1/detect?explain=true", files=upload(face_jpeg))
    assert response.status_code == 422 and "explanations" in response.json()["detail"]


# --- input errors: 413, 415, 422, never a stack trace ----------------------------------------------

def test_upload_over_the_size_limit_is_413(make_client: Any) -> None:
    client = make_client(max_upload_mb=0.05)
    big = np.random.default_rng(1).integers(0, 255, 100_000, dtype=np.uint8).tobytes()
    response = client.post("/v1/detect", files=upload(big))
    assert response.status_code == 413 and "upload limit" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while streaming
        boundary = b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n"
        yield boundary + b"Content-Type: image/jpeg\r\n\r\n"
        for _ in range(20):
            yield b"\xff" * 10_000

    response = client.post("/v1/detect", content=chunks(),
                           headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413


def test_unsupported_types_are_415(make_client: Any) -> None:
    client = make_client()
    response = client.post("/v1/detect", files=upload(b"hello", "notes.txt", "text/plain"))
    assert response.status_code == 415 and "text/plain" in response.json()["detail"]
    response = client.post("/v1/detect", files=upload(b"%PDF-1.7\n...", "paper.jpg"))  # lies about its type
    assert response.status_code == 415 and "PDF" in response.json()["detail"]


def test_undecodable_images_and_bombs_are_422_with_a_clear_message(make_client: Any, face_jpeg: bytes
                                                                    ) -> None:
    client = make_client(max_pixels=1_000_000)
    cases = {
        "truncated.jpg": (face_jpeg[: len(face_jpeg) // 3], "cannot decode"),
        "empty.jpg": (b"", "0 bytes"),
        "bomb.png": (png_header_only(20_000, 20_000), "decompression bomb"),
        "pillow-bomb.png": (png_header_only(100_000, 100_000), "pixel limit"),
        "big.jpg": (jpeg(np.zeros((1200, 1000, 3), np.uint8)), "over the limit of 1000000 pixels"),
    }
    for name, (data, reason) in cases.items():
        response = client.post("/v1/detect", files=upload(data, name, "image/png"))
        assert response.status_code == 422, name
        detail = response.json()["detail"]
        assert reason in detail and name in detail and "Traceback" not in detail


def test_an_internal_error_is_500_without_details(make_client: Any, face_jpeg: bytes, predictor: Predictor,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(predictor, "predict", broken)
    response = client.post("/v1/detect", files=upload(face_jpeg))
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert "secret" not in response.text and "Traceback" not in response.text


# --- capacity, keys, rate limit, CORS --------------------------------------------------------------------

def test_full_pool_is_503_with_retry_after(make_client: Any, face_jpeg: bytes) -> None:
    client = make_client(workers=1, queue=0)
    pool = client.app.state.service.pool
    release = threading.Event()
    pool.submit(release.wait)  # occupies the only worker; no queue
    try:
        deadline = time.monotonic() + 5
        while pool.running == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        response = client.post("/v1/detect", files=upload(face_jpeg))
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert client.get("/healthz").status_code == 200  # the service itself still answers
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while pool.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.post("/v1/detect", files=upload(face_jpeg)).status_code == 200


def test_a_reserved_slot_counts_until_used_or_given_back() -> None:
    from deepfake_detection.serve.workers import PoolFull, WorkerPool

    pool = WorkerPool(1, 0)
    try:
        with pool.reserve():
            assert pool.full
            with pytest.raises(PoolFull):
                pool.reserve()
        assert not pool.full  # left unused: given back
        ran = threading.Event()
        with pool.reserve() as slot:
            slot.submit(ran.set)
        assert ran.wait(5)
    finally:
        pool.shutdown()
    assert not pool.full


def test_api_key_when_configured(make_client: Any, face_jpeg: bytes) -> None:
    client = make_client(api_key="s3cret", max_upload_mb=0.05)
    assert client.post("/v1/detect", files=upload(face_jpeg)).status_code == 401
    big = upload(b"\xff" * 100_000)  # refused for the key before the body is looked at
    assert client.post("/v1/detect", files=big).status_code == 401
    for key, code in (("wrong", 401), ("s3cret", 200)):
        response = client.post("/v1/detect", files=upload(face_jpeg), headers={"X-API-Key": key})
        assert response.status_code == code
    assert client.get("/v1/recent").status_code == 401
    assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200
    with pytest.raises(Exception) as refused, client.websocket_connect("/v1/stream") as ws:
        ws.receive_json()
    assert getattr(refused.value, "code", None) == 1008
    with client.websocket_connect("/v1/stream", subprotocols=["dfd", "dfd-key.s3cret"]) as ws:
        assert ws.accepted_subprotocol == "dfd"
        ws.send_bytes(face_jpeg)
        assert ws.receive_json()["result"]["status"] == "ok"
    with client.websocket_connect("/v1/stream", headers={"X-API-Key": "s3cret"}) as ws:
        ws.send_bytes(face_jpeg)
        assert ws.receive_json()["result"]["status"] == "ok"


def test_rate_limit_is_429_with_retry_after(make_client: Any, no_face_jpeg: bytes) -> None:
    client = make_client(rate_limit="2/min")
    codes = [client.post("/v1/detect", files=upload(no_face_jpeg)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    response = client.post("/v1/detect", files=upload(no_face_jpeg))
    assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1


def test_hourly_rate_limit_is_enforced(make_client: Any) -> None:
    assert ServeSettings(rate_limit="10/h").rate_limit == pytest.approx(10 / 60)  # not rounded to 0 (= off)
    client = make_client(rate_limit="10/h")
    assert client.get("/v1/recent").status_code == 200  # a burst of one, then one every 6 minutes
    response = client.get("/v1/recent")
    assert response.status_code == 429 and "10/h" in response.json()["detail"]
    assert 300 <= int(response.headers["Retry-After"]) <= 360


def test_wrong_keys_use_up_the_rate_limit(make_client: Any, face_jpeg: bytes) -> None:
    client = make_client(api_key="s3cret", rate_limit="2/min")
    codes = [client.get("/v1/recent", headers={"X-API-Key": f"guess-{i}"}).status_code for i in range(3)]
    assert codes == [401, 401, 429]
    assert client.get("/v1/recent", headers={"X-API-Key": "s3cret"}).status_code == 429
    stream = make_client(api_key="s3cret", rate_limit="2/min")
    reasons = []
    for key in ("guess-1", "guess-2", "s3cret"):
        # Refused streams are accepted, then closed with 1008 and the reason (not a bare HTTP 403).
        with pytest.raises(Exception) as refused, stream.websocket_connect("/v1/stream",
                                                                          headers={"X-API-Key": key}) as ws:
            ws.receive_json()
        assert getattr(refused.value, "code", None) == 1008
        reasons.append(getattr(refused.value, "reason", ""))
    assert ["API key" in r for r in reasons] == [True, True, False] and "rate limit" in reasons[2]


def asgi_get(app: Any, path: str, *, root_path: str, headers: dict[str, str] | None = None) -> int:
    """Status of a GET sent the way uvicorn sends it behind --root-path: the prefix is in `path` too."""
    import asyncio

    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": root_path,
             "query_string": b"", "client": ("203.0.113.7", 50000), "server": ("testserver", 80),
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
    asyncio.run(app(scope, receive, send))
    return int(next(m["status"] for m in messages if m["type"] == "http.response.start"))


def test_api_key_and_rate_limit_hold_behind_a_path_prefix(make_client: Any) -> None:
    app = make_client(api_key="s3cret", rate_limit="2/min").app
    assert asgi_get(app, "/api/v1/recent", root_path="/api") == 401
    assert asgi_get(app, "/api/v1/recent", root_path="/api", headers={"X-API-Key": "s3cret"}) == 200
    assert asgi_get(app, "/api/healthz", root_path="/api") == 200  # open endpoints stay open
    assert asgi_get(app, "/api/v1/recent", root_path="/api", headers={"X-API-Key": "s3cret"}) == 429


def test_cors_is_off_unless_configured(make_client: Any) -> None:
    preflight = {"Origin": "http://example.org", "Access-Control-Request-Method": "POST"}
    off = make_client().options("/v1/detect", headers=preflight)
    assert "access-control-allow-origin" not in off.headers
    on = make_client(cors="http://example.org").options("/v1/detect", headers=preflight)
    assert on.status_code == 200 and on.headers["access-control-allow-origin"] == "http://example.org"


# --- health, readiness, metrics -----------------------------------------------------------------------

def test_health_and_readiness(make_client: Any, predictor: Predictor) -> None:
    client = make_client()
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert ready["model"]["name"] == predictor.model_info["name"]
    assert len(ready["model"]["sha256"]) == 64 and ready["model"]["sha256"] == predictor.backend.sha256


def test_readiness_is_503_before_the_model_is_loaded(tmp_path: Path) -> None:
    app = create_app(ServeSettings(jobs_dir=tmp_path))
    client = TestClient(app)  # no lifespan: nothing loaded
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["status"] == "loading"
    assert client.get("/healthz").status_code == 200


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_are_prometheus_text(make_client: Any, face_jpeg: bytes, no_face_jpeg: bytes) -> None:
    client = make_client()
    client.post("/v1/detect", files=upload(face_jpeg))
    client.post("/v1/detect", files=upload(no_face_jpeg))
    client.post("/v1/detect", files=upload(b"x", "x.txt", "text/plain"))
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    families = {f.name: f.type for f in text_string_to_metric_families(response.text)}
    assert families["dfd_request_duration_seconds"] == "histogram"
    ok = ("dfd_requests_total", (("endpoint", "/v1/detect"), ("method", "POST"), ("status", "200")))
    assert samples[ok] == 2
    assert samples[("dfd_request_errors_total", (("endpoint", "/v1/detect"), ("status", "415")))] == 1
    assert samples[("dfd_request_duration_seconds_count", (("endpoint", "/v1/detect"),))] == 3
    assert samples[("dfd_images_total", (("source", "upload"),))] == 2
    assert samples[("dfd_faces_total", ())] == 1
    assert 0.0 <= samples[("dfd_fake_rate", ())] <= 1.0
    assert samples[("dfd_queue_depth", ())] == 0
    (model,) = [labels for (name, labels) in samples if name == "dfd_model_info"]
    assert dict(model)["sha256"] == client.get("/readyz").json()["model"]["sha256"]
    assert ("dfd_video_jobs", (("state", "done"),)) in samples


def test_metric_labels_come_from_fixed_sets(make_client: Any) -> None:
    client = make_client()
    client.request("X0", "/healthz")
    client.get("/v1/jobs/" + "a" * 32)
    client.get("/no/such/page/12345")
    samples = _samples(client.get("/metrics").text)
    labels = [dict(key[1]) for key in samples if key[0] == "dfd_requests_total"]
    assert {label["method"] for label in labels} <= {"GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD",
                                                     "other"}
    assert {"endpoint": "/healthz", "method": "other", "status": "405"} in labels
    endpoints = {label["endpoint"] for label in labels}
    assert "/v1/jobs/{job_id}" in endpoints and "other" in endpoints
    assert not any("a" * 32 in e or "12345" in e for e in endpoints)


def test_recent_detections_for_the_dashboard(make_client: Any, face_jpeg: bytes) -> None:
    client = make_client()
    client.post("/v1/detect", files=upload(face_jpeg, "mine.jpg"))
    (latest,) = client.get("/v1/recent").json()["detections"]
    assert latest["name"] == "mine.jpg" and latest["faces"] == 1 and latest["source"] == "upload"


def test_pages_and_openapi(make_client: Any) -> None:
    client = make_client()
    assert 'id="files"' in client.get("/").text
    assert 'id="chart-latency"' in client.get("/dashboard").text
    assert client.get("/static/app.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/detect", "/v1/detect/batch", "/v1/videos", "/v1/jobs/{job_id}", "/healthz", "/readyz",
            "/metrics"} <= set(paths)


class _AssetLinks(HTMLParser):
    """Every URL a page makes the browser load: <script src>, <link href>, <img src>, <redoc spec-url>."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src", "redoc": "spec-url"}.get(tag)
        self.urls += [value for name, value in attrs if name == wanted and value]


def asset_links(html: str) -> list[str]:
    parser = _AssetLinks()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize(("page", "script"), [("/docs", "swagger-ui-bundle.js"),
                                              ("/redoc", "redoc.standalone.js")])
def test_api_docs_work_offline(make_client: Any, page: str, script: str) -> None:
    client = make_client(api_key="s3cret")  # the docs stay open like the other pages; /v1 does not
    response = client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "cdn" not in response.text.lower() and "fonts.googleapis" not in response.text
    if page == "/redoc":  # its sidebar credit loads a logo from redoc.ly unless images are held local
        assert response.headers["content-security-policy"] == "img-src 'self' data:"
    urls = asset_links(response.text)
    assert any(url.endswith("/" + script) for url in urls)
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url} from elsewhere"
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > (100_000 if url.endswith((".js", ".css")) else 1000), url
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/detect" in paths and page not in paths
    assert client.post("/v1/detect", files=upload(b"x")).status_code == 401


def test_api_docs_behind_a_path_prefix(tmp_path: Path, predictor: Predictor) -> None:
    app = create_app(ServeSettings(jobs_dir=tmp_path, explain=False), predictor=predictor)
    html = TestClient(app, root_path="/dfd", base_url="http://localhost").get("/docs").text
    assert "url: '/dfd/openapi.json'" in html
    assert all(url.startswith("/dfd/docs-assets/") for url in asset_links(html))


# --- live stream ---------------------------------------------------------------------------------------

def test_stream_answers_frames(make_client: Any, face_jpeg: bytes) -> None:
    client = make_client()
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_bytes(face_jpeg)
        reply = ws.receive_json()
        assert reply["frame"] == 0 and reply["result"]["status"] == "ok"
        assert len(reply["result"]["faces"]) == 1
        ws.send_bytes(b"not a jpeg")  # a bad frame is answered, the stream goes on
        reply = ws.receive_json()
        assert reply["frame"] == 1 and "error" in reply and "result" not in reply
        ws.send_bytes(face_jpeg)
        assert ws.receive_json()["frame"] == 2


def test_stream_drops_old_frames_instead_of_queueing(make_client: Any, face_jpeg: bytes) -> None:
    client = make_client()
    sent = 12
    with client.websocket_connect("/v1/stream") as ws:
        for _ in range(sent):
            ws.send_bytes(face_jpeg)
        replies = []
        while not replies or replies[-1]["frame"] != sent - 1:
            replies.append(ws.receive_json())
    frames = [r["frame"] for r in replies]
    assert frames == sorted(frames) and len(frames) < sent  # only the newest pending frame was kept
    assert replies[-1]["dropped"] == sent - len(frames)
    metrics = _samples(client.get("/metrics").text)
    assert metrics[("dfd_stream_frames_dropped_total", ())] == sent - len(frames)


# --- video jobs ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from dfd_testkit.synthetic import moving_face_clip

    path = moving_face_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", np.random.default_rng(0), n=24)
    return path.read_bytes()


def wait_for_job(client: TestClient, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("done", "error"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def test_video_job_gives_progress_and_a_verdict(make_client: Any, clip: bytes) -> None:
    client = make_client(video_frames=8)
    response = client.post("/v1/videos", files=upload(clip, "clip.mp4", "video/mp4"))
    assert response.status_code == 202
    job_id = response.json()["id"]
    job = wait_for_job(client, job_id)
    assert job["state"] == "done" and job["error"] is None
    assert job["progress"] == {"done": 8, "total": 8}
    result = job["result"]
    assert result["path"] == "clip.mp4" and result["status"] == "ok" and result["frames"] == 8
    assert result["tracks"] and result["label"] in ("fake", "real") and result["timeline"]
    assert not list((client.app.state.service.jobs.uploads).iterdir())  # the upload is removed


def test_video_errors(make_client: Any, clip: bytes) -> None:
    client = make_client()
    assert client.post("/v1/videos", files=upload(b"hi", "notes.txt", "text/plain")).status_code == 415
    response = client.post("/v1/videos", files=upload(b"\0" * 5000, "junk.mp4", "video/mp4"))
    assert response.status_code == 422 and "junk.mp4" in response.json()["detail"]
    assert client.get("/v1/jobs/" + "0" * 32).status_code == 404
    assert client.get("/v1/jobs/../../etc").status_code == 404
    full = make_client(video_queue=0)
    release = threading.Event()
    full.app.state.service.video_pool.submit(release.wait)
    try:
        response = full.post("/v1/videos", files=upload(clip, "clip.mp4", "video/mp4"))
        assert response.status_code == 503 and response.headers["Retry-After"]
    finally:
        release.set()


def test_a_clip_over_the_pixel_limit_is_refused_before_decoding(make_client: Any, clip: bytes,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = []
    monkeypatch.setattr("deepfake_detection.serve.app.sample_frames", lambda *a, **k: decoded.append(a))
    client = make_client(max_pixels=1000)
    response = client.post("/v1/videos", files=upload(clip, "clip.mp4", "video/mp4"))
    assert response.status_code == 422 and not decoded
    detail = response.json()["detail"]
    assert detail.startswith("clip.mp4: ") and detail.endswith("frames exceed the limit of 1000 pixels")
    service = client.app.state.service
    assert service.jobs.counts()["queued"] == 0 and not list(service.jobs.uploads.iterdir())
    assert service.video_pool.queue_depth == 0  # the slot held during the check went back


def test_video_job_errors_show_no_server_paths(make_client: Any, clip: bytes, predictor: Predictor,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from deepfake_detection.errors import CorruptImageError
    from deepfake_detection.infer.results import VideoResult

    client = make_client()
    jobs_dir = str(client.app.state.service.settings.jobs_dir)

    def unreadable(source: str, **_: Any) -> VideoResult:
        raise CorruptImageError(f"{source}: cannot open video")

    def buggy(source: str, **_: Any) -> VideoResult:
        return VideoResult(path="clip.mp4", status="error", threshold=0.5, model={},
                           error=f"internal error (KeyError): 'x' in {source}")

    errors = []
    for fake in (unreadable, buggy):
        monkeypatch.setattr(predictor, "predict_video", fake)
        job_id = client.post("/v1/videos", files=upload(clip, "clip.mp4", "video/mp4")).json()["id"]
        job = wait_for_job(client, job_id)
        assert job["state"] == "error" and jobs_dir not in str(job)
        errors.append(job["error"])
    assert errors[0] == "CorruptImageError: clip.mp4: cannot open video"
    assert "internal error" not in errors[1] and "service log" in errors[1]


def test_jobs_survive_a_restart_and_expire(tmp_path: Path) -> None:
    store = JobStore(tmp_path, ttl=3600)
    done, running = store.create("a.mp4"), store.create("b.mp4")
    store.finish(done, {"label": "real"})
    store.start(running)
    store.close()
    store = JobStore(tmp_path, ttl=3600)  # a restart
    assert store.get(done)["result"] == {"label": "real"}
    interrupted = store.get(running)
    assert interrupted["state"] == "error" and "restarted" in interrupted["error"]
    store.close()
    store = JobStore(tmp_path, ttl=0.05)
    time.sleep(0.1)
    assert store.get(done) is None  # expired: hidden at once
    assert store.expire() == 2 and store.counts() == {"queued": 0, "running": 0, "done": 0, "error": 0}
    store.close()


def test_a_finished_job_is_still_there_after_the_app_restarts(make_client: Any, clip: bytes, tmp_path: Path,
                                                              predictor: Predictor) -> None:
    settings = ServeSettings(jobs_dir=tmp_path / "shared", explain=False, video_frames=4)
    with TestClient(create_app(settings, predictor=predictor), base_url="http://localhost") as first:
        job_id = first.post("/v1/videos", files=upload(clip, "clip.mp4", "video/mp4")).json()["id"]
        assert wait_for_job(first, job_id)["state"] == "done"
    second = make_client(jobs_dir=tmp_path / "shared")  # the same jobs folder, a new process in all but name
    assert second.get(f"/v1/jobs/{job_id}").json()["result"]["frames"] == 4


def test_a_second_service_on_the_same_jobs_folder_refuses_to_start(tmp_path: Path, predictor: Predictor
                                                                   ) -> None:
    """Start-up fails the unfinished jobs and deletes the uploads it finds: a second service on the
    same folder would do that to the first one's work."""
    from deepfake_detection.serve.jobs import JobsFolderInUse

    first = JobStore(tmp_path, ttl=3600)
    queued = first.create("a.mp4")
    (first.uploads / f"{queued}.mp4").write_bytes(b"clip")
    with pytest.raises(JobsFolderInUse, match="--jobs-dir") as refused:
        JobStore(tmp_path, ttl=3600)
    assert str(tmp_path) in str(refused.value) and "\n" not in str(refused.value)
    assert first.get(queued)["state"] == "queued" and (first.uploads / f"{queued}.mp4").exists()
    app = create_app(ServeSettings(jobs_dir=tmp_path, explain=False), predictor=predictor)
    with pytest.raises(JobsFolderInUse), TestClient(app):
        pass
    assert app.state.service.startup_error.startswith("JobsFolderInUse: another dfd serve uses the jobs")
    first.close()  # the folder is free again
    JobStore(tmp_path, ttl=3600).close()


# --- settings --------------------------------------------------------------------------------------------

def test_settings_from_environment_and_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from deepfake_detection.cli import build_parser

    monkeypatch.setenv("DFD_API_KEY", "from-env")
    monkeypatch.setenv("DFD_RATE_LIMIT", "2/s")
    monkeypatch.setenv("DFD_CORS", "http://a.example, http://b.example")
    monkeypatch.setenv("DFD_MAX_UPLOAD_MB", "5")
    settings = ServeSettings()
    assert settings.api_key_text == "from-env" and settings.rate_limit == 120
    assert "from-env" not in repr(settings) and "from-env" not in str(settings.model_dump())
    assert settings.cors == ["http://a.example", "http://b.example"]
    assert settings.max_upload_bytes == 5 * 2**20
    args = build_parser().parse_args(["serve", "--port", "9000", "--api-key", "from-flag", "--no-explain"])
    given = {name: getattr(args, name) for name in ServeSettings.model_fields if hasattr(args, name)}
    assert given == {"port": 9000, "api_key": "from-flag", "explain": False}  # unset flags leave env alone
    merged = ServeSettings(**given)
    assert merged.api_key_text == "from-flag" and merged.rate_limit == 120 and merged.port == 9000
    with pytest.raises(ValueError, match="rate limit"):
        ServeSettings(rate_limit="fast")


def test_grad_cam_points_at_the_evidence() -> None:
    """A model whose logit is the mean brightness of its input: the "fake" evidence is the bright
    square, the "real" evidence the dark rest."""
    import torch
    from torch import nn

    from deepfake_detection.models.spec import ModelSpec
    from deepfake_detection.serve.explain import GradCam

    conv, linear = nn.Conv2d(3, 1, 1), nn.Linear(1, 1)
    with torch.no_grad():
        for layer in (conv, linear):
            layer.weight.fill_(1.0)
            layer.bias.zero_()
    model = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear)
    cam = GradCam(model, ModelSpec(arch="custom_cnn", input_size=32))
    crop = np.zeros((32, 32, 3), np.uint8)
    crop[:8, :8] = 255
    fake_map, real_map = cam.heatmaps([crop, crop], [True, False])
    assert fake_map.max() == pytest.approx(1.0)
    assert fake_map[:6, :6].min() > 0.9 and fake_map[16:, 16:].max() < 0.1
    assert real_map[16:, 16:].min() > 0.9 and real_map[:6, :6].max() < 0.1


def test_occlusion_maps_find_the_evidence_without_pytorch() -> None:
    """The same brightness model as above, scored as ONNX Runtime would be: covering the bright square
    lowers the fake probability (evidence for "fake"), covering the dark rest raises it ("real")."""
    from deepfake_detection.models.spec import ModelSpec
    from deepfake_detection.serve.explain import OcclusionMap

    class Brightness:
        spec = ModelSpec(arch="custom_cnn", input_size=32)

        def probabilities(self, crops: list[np.ndarray]) -> np.ndarray:
            return 1 / (1 + np.exp(-(np.array([c.mean() for c in crops]) / 255 * 8 - 4)))

    occlusion = OcclusionMap(Brightness())  # type: ignore[arg-type]
    crop = np.zeros((32, 32, 3), np.uint8)
    crop[:8, :8] = 255
    fake_map, real_map = occlusion.heatmaps([crop, crop], [True, False])
    assert fake_map.shape == real_map.shape == (32, 32)
    assert fake_map.max() == pytest.approx(1.0) and occlusion.method == "occlusion"
    assert fake_map[:4, :4].min() > 0.5 and fake_map[20:, 20:].max() < 0.1
    assert real_map[20:, 20:].min() > 0.5 and real_map[:4, :4].max() < 0.1


def test_the_threshold_setting_reaches_every_result(tmp_path: Path, face_jpeg: bytes,
                                                    predictor: Predictor) -> None:
    """`dfd serve --threshold` / DFD_THRESHOLD: the service's predictor is built with it."""
    settings = ServeSettings(jobs_dir=tmp_path, explain=False, threshold=0.0)
    with TestClient(create_app(settings), base_url="http://localhost") as client:  # a loopback Host
        body = client.post("/v1/detect", files=upload(face_jpeg)).json()
    assert body["threshold"] == 0.0 and body["label"] == "fake"
    with pytest.raises(ValueError, match="threshold"):  # a given predictor cannot take it: refused
        create_app(settings, predictor=predictor)


def test_a_wrong_model_stops_start_up_with_a_clear_reason(tmp_path: Path) -> None:
    from deepfake_detection.errors import ModelError

    app = create_app(ServeSettings(jobs_dir=tmp_path, model=tmp_path / "missing.onnx"))
    with pytest.raises(ModelError), TestClient(app):
        pass
    assert app.state.service.startup_error == f"ModelError: model file not found: {tmp_path / 'missing.onnx'}"


def test_stream_refuses_pages_from_other_sites(make_client: Any, face_jpeg: bytes) -> None:
    """Browsers send Origin on WebSockets and CORS does not cover them: a page on another site must
    not be able to drive a local service's stream."""
    client = make_client()
    with pytest.raises(Exception) as refused, client.websocket_connect(
            "/v1/stream", headers={"origin": "http://evil.example"}) as ws:
        ws.send_bytes(face_jpeg)  # an accepted stream would answer this (and the test would fail)
        ws.receive_json()
    assert getattr(refused.value, "code", None) == 1008
    for headers in ({"origin": "http://testserver"}, {}):  # the service's own page; a script
        with client.websocket_connect("/v1/stream", headers=headers) as ws:
            ws.send_bytes(face_jpeg)
            assert ws.receive_json()["result"]["status"] == "ok"
    allowed = make_client(cors=["https://app.example"])
    with allowed.websocket_connect("/v1/stream", headers={"origin": "https://app.example"}) as ws:
        ws.send_bytes(face_jpeg)
        assert ws.receive_json()["result"]["status"] == "ok"
