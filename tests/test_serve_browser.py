"""The web page in headless Chromium (Debian's `chromium`, driven by Playwright; no browser download):
upload an image and find the overlay and the verdict, follow a clip job across a reload, stream a
fake webcam (a generated face clip), load the dashboard, and render the API docs with no network."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
playwright_api = pytest.importorskip("playwright.sync_api")

from deepfake_detection.serve import ServeSettings  # noqa: E402
from deepfake_detection.serve.server import running_server  # noqa: E402
from dfd_testkit.browser import CHROMIUM, launch_with_camera  # noqa: E402
from dfd_testkit.synthetic import moving_face_clip, scene, webcam_frame, write_image, write_y4m  # noqa: E402

# scripts/test.sh (CI) sets DFD_REQUIRE_BROWSER=1: there a missing browser fails instead of skipping.
if CHROMIUM is None and os.environ.get("DFD_REQUIRE_BROWSER") == "1":
    raise RuntimeError("DFD_REQUIRE_BROWSER=1 but Debian's chromium is not installed (scripts/install.sh "
                       "installs it with apt-get)")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                 "(scripts/install.sh installs it with apt-get)")]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    camera = webcam_frame(rng)
    portrait = scene(rng, (360, 480), face=0, scale=0.8)
    return {
        "image": write_image(folder / "portrait.jpg", portrait),
        "blurred": write_image(folder / "blurred.jpg", cv2.GaussianBlur(portrait, (0, 0), 3.0)),
        "clip": moving_face_clip(folder / "clip.mp4", rng, n=16),
        "camera": write_y4m(folder / "camera.y4m", [camera] * 15),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = ServeSettings(port=0, jobs_dir=tmp_path_factory.mktemp("jobs"), explain=True, video_frames=8)
    with running_server(settings) as url:
        yield url


@pytest.fixture(scope="module")
def browser(media: dict[str, Path]) -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        browser = launch_with_camera(p, media["camera"])
        yield browser
        browser.close()


def test_a_blurry_face_is_marked_and_warned_about(server: str, browser: object,
                                                  media: dict[str, Path]) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(server + "/")
    page.set_input_files("#files", str(media["blurred"]))
    verdict = page.locator(".card .verdict.real, .card .verdict.fake")
    verdict.wait_for(timeout=TIMEOUT_MS)
    assert "1 face). Warning: the face is blurry" in verdict.inner_text()
    assert re.fullmatch(r"(real|fake) [01]\.\d\d blurry", page.locator(".card .frame .box .tag").inner_text())


def test_upload_shows_boxes_and_the_verdict(server: str, browser: object, media: dict[str, Path]) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(server + "/")
    page.set_input_files("#files", str(media["image"]))
    verdict = page.locator(".card .verdict.real, .card .verdict.fake")
    verdict.wait_for(timeout=TIMEOUT_MS)
    pattern = r"(REAL|FAKE): fake probability 0\.\d\d \(threshold 0\.\d\d, 1 face\)"
    assert re.match(pattern, verdict.inner_text())
    box = page.locator(".card .frame .box")
    assert box.count() == 1
    assert re.fullmatch(r"(real|fake) [01]\.\d\d", box.locator(".tag").inner_text())
    assert "Warning" not in verdict.inner_text()
    image_area, box_area = page.locator(".card .frame img").bounding_box(), box.bounding_box()
    assert box_area["width"] > 20 and box_area["height"] > 20
    assert image_area["x"] <= box_area["x"]
    assert box_area["x"] + box_area["width"] <= image_area["x"] + image_area["width"] + 1
    assert page.locator(".heat").count() == 0
    page.check("#explain")  # Grad-CAM: a heatmap over the face
    page.set_input_files("#files", str(media["image"]))
    heat = page.locator(".card .frame .heat")
    heat.wait_for(timeout=TIMEOUT_MS)
    assert heat.count() == 1 and heat.get_attribute("src").startswith("data:image/png;base64,")
    page.close()


def test_clip_job_survives_a_page_reload(server: str, browser: object, media: dict[str, Path]) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(server + "/")
    page.set_input_files("#files", str(media["clip"]))
    page.locator("[id^=job-]").wait_for(timeout=TIMEOUT_MS)
    page.reload()  # the job id is kept in the browser; the job on the server
    card = page.locator("[id^=job-]")
    card.locator(".verdict.real, .verdict.fake").wait_for(timeout=TIMEOUT_MS)
    assert "fake probability" in card.locator(".verdict").inner_text()
    assert card.locator(".timeline span").count() >= 1
    page.close()


def test_webcam_stream_draws_live_overlays(server: str, browser: object) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(server + "/")
    page.click("#webcam")
    page.locator("#live .box").first.wait_for(timeout=TIMEOUT_MS)
    live = page.locator("#live")
    first = int(live.get_attribute("data-answered") or 0)
    # The stream keeps going after the first overlay: later frames are answered too. Its rate (the
    # issue's 15 frames/s) is measured by benchmarks/bench_webcam.py: a machine shared with other
    # jobs cannot hold a timed bar in a test.
    page.wait_for_function(f"Number(document.getElementById('live').dataset.answered) >= {first + 3}",
                           timeout=TIMEOUT_MS)
    print(f"\nwebcam stream in headless Chromium: {page.locator('#live-stats').inner_text()}")
    assert re.fullmatch(r"(real|fake) [01]\.\d\d", page.locator("#live .box .tag").first.inner_text())
    page.click("#webcam")
    page.close()


def test_dashboard_charts_the_service_metrics(server: str, browser: object, media: dict[str, Path]) -> None:
    import httpx

    files = {"file": ("portrait.jpg", media["image"].read_bytes(), "image/jpeg")}
    assert httpx.post(server + "/v1/detect", files=files, timeout=60).status_code == 200
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(server + "/dashboard")
    page.wait_for_function("Number(document.body.dataset.polled || 0) >= 2", timeout=TIMEOUT_MS)
    assert page.locator("#model").inner_text().startswith("model: dfd-default")
    assert float(page.locator("#images").inner_text()) >= 1
    assert page.locator("#throughput").inner_text() != "–"
    assert page.locator("#recent tbody tr").count() >= 1
    assert page.locator("canvas#chart-latency").count() == 1
    page.close()


def test_page_with_an_api_key(browser: object, media: dict[str, Path], tmp_path: Path) -> None:
    settings = ServeSettings(port=0, jobs_dir=tmp_path, explain=False, api_key="s3cret")
    with running_server(settings) as url:
        page = browser.new_page()  # type: ignore[attr-defined]
        page.goto(url + "/")
        page.set_input_files("#files", str(media["image"]))
        refused = page.locator(".card .verdict.error")
        refused.wait_for(timeout=TIMEOUT_MS)
        assert refused.inner_text().startswith("401")
        page.fill("#api-key", "s3cret")
        page.dispatch_event("#api-key", "change")
        page.set_input_files("#files", str(media["image"]))
        page.locator(".card .verdict.real, .card .verdict.fake").wait_for(timeout=TIMEOUT_MS)
        page.click("#webcam")  # the stream takes the key as a subprotocol
        page.locator("#live .box").first.wait_for(timeout=TIMEOUT_MS)
        page.click("#webcam")
        page.close()


@pytest.mark.parametrize(("path", "operation"), [
    ("/docs", ".opblock-summary-path[data-path='/v1/detect']"),
    ("/redoc", "[data-section-id='tag/detect/operation/detect_v1_detect_post']"),
])
def test_api_docs_render_offline(server: str, browser: object, path: str, operation: str) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    local, elsewhere = server.rstrip("/"), []

    def offline(route: Any) -> None:  # the machine has no network: anything not from the server fails
        if route.request.url.startswith(local + "/") or route.request.url.startswith("data:"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", offline)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server + path)
    page.locator(operation).first.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_load_state("networkidle")  # requests made after the first render are caught too
    assert elsewhere == [] and errors == []
    page.close()
