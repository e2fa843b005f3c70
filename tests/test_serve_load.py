"""Load on loopback: 500 requests from 16 concurrent clients against a real uvicorn server.
Zero 5xx (the queue holds 16 clients), latency and throughput printed, memory before and after."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from deepfake_detection.serve import ServeSettings  # noqa: E402
from deepfake_detection.serve.loadgen import face_images, rss_mb, run_load  # noqa: E402
from deepfake_detection.serve.server import running_server  # noqa: E402


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
