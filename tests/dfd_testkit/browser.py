"""Debian's chromium driven by Playwright with a fake webcam (no browser download): shared by the
browser test and benchmarks/bench_webcam.py, so both measure the same page under the same camera."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def launch_with_camera(playwright: Any, camera: Path) -> Any:
    """Headless Chromium whose camera plays `camera` (a .y4m clip) and grants access without asking."""
    if CHROMIUM is None:
        raise RuntimeError("Debian's chromium is not installed (scripts/install.sh installs it with apt-get)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={camera}"])
