"""Load on loopback: 500 requests from 16 concurrent clients against a real uvicorn server.
Zero 5xx (the queue holds 16 clients), latency and throughput printed, memory before and after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytestmark = pytest.mark.slow  # a real server under load

from deepfake_detection.serve import ServeSettings  # noqa: E402
from deepfake_detection.serve.server import running_server  # noqa: E402
from dfd_testkit.loadgen import face_images, rss_mb, run_load  # noqa: E402


def test_500_requests_from_16_clients(tmp_path: Path) -> None:
    images = face_images(8)  # 320x240, one face each
    settings = ServeSettings(port=0, jobs_dir=tmp_path, explain=False, queue=32)
    with running_server(settings) as url:
        run_load(url, images, requests=32, clients=16)  # warm-up: per-thread detectors, allocator pools
        before = rss_mb()
        report = run_load(url, images, requests=500, clients=16)
        after = rss_mb()
        import httpx

        metrics = httpx.get(url + "/metrics").text
    print(f"\n{report.summary()}\nRSS (server and clients) before {before:.0f} MiB, after {after:.0f} MiB "
          f"({after - before:+.0f} MiB)")
    assert report.server_errors == 0, report.statuses
    assert report.statuses == {200: 500}
    assert after - before < 150, "memory grew under steady load"
    assert 'dfd_requests_total{endpoint="/v1/detect",method="POST",status="200"} 532.0' in metrics


def test_overload_and_oversize_over_real_http(tmp_path: Path) -> None:
    """A tiny pool (1 worker, no queue) under 8 concurrent clients answers 503 (Retry-After: see
    test_serve_api), never anything else; oversized bodies get 413 whether or not they declare their
    length, and the connection stays usable."""
    import httpx

    images = face_images(4)
    settings = ServeSettings(port=0, jobs_dir=tmp_path, explain=False, workers=1, queue=0, max_upload_mb=0.5)
    with running_server(settings) as url:
        report = run_load(url, images, requests=64, clients=8)
        assert set(report.statuses) == {200, 503} and report.statuses[503] > 0, report.statuses
        with httpx.Client(base_url=url) as http:
            response = http.post("/v1/detect", content=b"x" * 1_000_000,
                                 headers={"Content-Type": "multipart/form-data; boundary=x"})
            assert response.status_code == 413  # from Content-Length, before reading

            def chunks() -> Iterator[bytes]:
                yield (b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
                       b"Content-Type: image/jpeg\r\n\r\n")
                for _ in range(100):
                    yield b"\xff" * 10_000

            response = http.post("/v1/detect", content=chunks(),
                                 headers={"Content-Type": "multipart/form-data; boundary=x"})
            assert response.status_code == 413  # counted while streaming
            assert http.get("/healthz").status_code == 200  # the same connection still works
            metrics = http.get("/metrics").text
    assert 'dfd_request_errors_total{endpoint="/v1/detect",status="503"}' in metrics
    assert 'dfd_request_errors_total{endpoint="/v1/detect",status="413"} 2.0' in metrics
