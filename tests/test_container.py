"""The `dfd serve` container image: built by scripts/build_image.sh, run read-only as a non-root user.

Needs podman, runc and mmdebstrap (scripts/build_image.sh installs them as root). Skipped where they
are missing, except with DFD_REQUIRE_CONTAINER=1 (scripts/test.sh, CI), where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "CONTAINERS_CONF": str(REPO / "deploy" / "containers.conf")}


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "--runtime", "runc", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout, check=check)


@pytest.fixture(scope="module")
def image() -> str:
    can_install = os.geteuid() == 0 and shutil.which("apt-get")
    if not all(shutil.which(t) for t in ("podman", "runc", "mmdebstrap")) and not can_install:
        if os.environ.get("DFD_REQUIRE_CONTAINER"):
            pytest.fail("podman, runc and mmdebstrap are needed for the container test")
        pytest.skip("podman, runc and mmdebstrap are not installed")
    built = subprocess.run([str(REPO / "scripts" / "build_image.sh")], capture_output=True, text=True,
                           timeout=1800, cwd=REPO)
    assert built.returncode == 0, built.stderr[-4000:]
    return built.stdout.strip().splitlines()[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except OSError:
        return 0, {}


def _post_image(url: str, path: Path) -> dict[str, object]:
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    body = head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


@pytest.fixture()
def container(image: str) -> Iterator[tuple[str, str]]:
    name, port = f"dfd-test-{uuid.uuid4().hex[:8]}", _free_port()
    volume = f"{name}-jobs"
    # PORT as platforms set it (Heroku, App Runner); DFD_THRESHOLD as any DFD_* setting; --workers as a flag.
    podman("run", "--detach", "--name", name, "--read-only", "--publish", f"127.0.0.1:{port}:8080",
           "--volume", f"{volume}:/var/lib/dfd/jobs", "--env", "PORT=8080", "--env", "DFD_THRESHOLD=0.0",
           image, "--workers", "1")
    try:
        yield name, f"http://127.0.0.1:{port}"
    finally:
        podman("rm", "--force", name, check=False)
        podman("volume", "rm", "--force", volume, check=False)


def test_container_serves_and_stops_on_sigterm(container: tuple[str, str]) -> None:
    name, url = container
    start, status = time.monotonic(), 0
    while time.monotonic() - start < 90 and status != 200:
        status, ready = _get(f"{url}/readyz")
        time.sleep(0.25)
    assert status == 200 and ready["status"] == "ready", podman("logs", name, check=False).stderr[-2000:]
    assert ready["explain_method"] == "occlusion"  # the slim install: no PyTorch, so no Grad-CAM
    command = podman("exec", name, "cat", "/proc/1/cmdline").stdout.split("\0")
    assert command[-4:] == ["serve", "--workers", "1", ""]  # PID 1 is dfd itself (exec), with the flags
    print(f"container ready after {time.monotonic() - start:.1f} s")

    result = _post_image(f"{url}/v1/detect?explain=true", REPO / "samples" / "astronaut.jpg")
    assert result["status"] == "ok" and len(result["faces"]) == 1  # type: ignore[arg-type]
    assert result["explanations"][0]["method"] == "occlusion"  # type: ignore[index]
    assert result["threshold"] == 0.0 and result["label"] == "fake"  # configured by DFD_THRESHOLD

    assert podman("healthcheck", "run", name, check=False).returncode == 0  # the image's HEALTHCHECK
    config = json.loads(podman("inspect", name).stdout)[0]
    assert config["Config"]["User"] == "10001:10001" and config["HostConfig"]["ReadonlyRootfs"]
    assert podman("exec", name, "touch", "/opt/dfd/x", check=False).returncode != 0  # read-only root
    assert "jobs.sqlite3" in podman("exec", name, "ls", "/var/lib/dfd/jobs").stdout  # the writable folder

    start = time.monotonic()
    podman("stop", "--time", "10", name)  # SIGTERM, then SIGKILL after 10 s
    stopped = time.monotonic() - start
    print(f"container stopped {stopped:.1f} s after SIGTERM")
    state = json.loads(podman("inspect", name).stdout)[0]["State"]
    assert state["ExitCode"] == 0 and stopped < 5
    assert "Application shutdown complete" in podman("logs", name).stderr
