"""Benchmark the web page's webcam stream: headless Chromium with a fake camera, `dfd serve` on loopback.

The page sends the camera's 640x480 frames scaled to 480x360 JPEGs (quality 0.7) over the /v1/stream
WebSocket, two frames in flight, and draws the answers. This script counts the frames answered per
second in steady state (after the first overlay), next to the plain approach in the same run:
Predictor.predict on the same 480x360 JPEG, decoded each time, one frame after the other, in this
process (no browser, no WebSocket). The issue's bar for the stream is 15 frames/s with the default model.

The fake camera plays a generated 640x480 frame with one public-domain face (Debian's `chromium`,
driven by Playwright as in tests/test_serve_browser.py).

    .venv/bin/python benchmarks/bench_webcam.py [--seconds 10] [--model FILE]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from bench_serve import serve_process

TARGET_FPS = 15.0


def plain_fps(frame: np.ndarray, seconds: float, model: str | None) -> float:
    """Decode + detect + crop + classify one 480x360 JPEG at a time, as the service does per frame."""
    from deepfake_detection.infer.predictor import Predictor

    small = cv2.resize(frame, (480, 360), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok
    data = jpeg.tobytes()
    predictor = Predictor.load(model)
    predictor.predict(data)  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        predictor.predict(data)
        n += 1
    return n / (time.perf_counter() - start)


def stream_fps(camera: Path, seconds: float, model: str | None) -> tuple[float, str]:
    """Frames answered per second by the page's webcam stream, and the page's own stats line."""
    from playwright.sync_api import sync_playwright

    from dfd_testkit.browser import launch_with_camera

    extra = ["--model", model] if model else []
    with tempfile.TemporaryDirectory() as jobs, serve_process(extra, jobs) as (url, _), \
            sync_playwright() as p:
        browser = launch_with_camera(p, camera)
        page = browser.new_page()
        page.goto(url + "/")
        page.click("#webcam")
        page.locator("#live .box").first.wait_for(timeout=60_000)
        page.wait_for_timeout(1000)  # past the first frames (sessions warming up)
        live = page.locator("#live")
        first, start = int(live.get_attribute("data-answered") or 0), time.perf_counter()
        page.wait_for_timeout(seconds * 1000)
        answered = int(live.get_attribute("data-answered") or 0) - first
        fps = answered / (time.perf_counter() - start)
        stats = page.locator("#live-stats").inner_text()
        browser.close()
    return fps, stats


def main() -> None:
    from dfd_testkit.synthetic import webcam_frame, write_y4m

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="steady-state seconds measured")
    parser.add_argument("--model", help="model file; default: the bundled model")
    args = parser.parse_args()
    frame = webcam_frame(np.random.default_rng(0))
    with tempfile.TemporaryDirectory() as folder:
        camera = write_y4m(Path(folder) / "camera.y4m", [frame] * 15)
        fps, stats = stream_fps(camera, args.seconds, args.model)
    plain = plain_fps(frame, args.seconds, args.model)
    print("640x480 fake camera, one face, sent as 480x360 JPEGs")
    print(f"plain Predictor.predict loop (decode, detect, classify): {plain:.1f} frames/s")
    print(f"webcam stream in headless Chromium over /v1/stream: {fps:.1f} frames/s answered "
          f"(page: {stats})")
    print(f"target {TARGET_FPS:.0f} frames/s: {'met' if fps >= TARGET_FPS else 'NOT met'}")


if __name__ == "__main__":
    main()
