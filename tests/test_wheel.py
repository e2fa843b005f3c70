"""The slim install: the wheel, installed with its `serve` extra into a fresh virtual environment
(no PyTorch), carries the bundled model, scores the samples like the development install, and serves.

Needs the package index (PyPI or this machine's wheel cache) for the dependencies. Prints the install
size and the serve process's memory (see docs/deploy.md)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from deepfake_detection.cli import main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str | Path, timeout: float = 900, **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{args}: {done.stderr[-3000:]}"
    return done  # type: ignore[no-any-return]


def _size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _build_traces() -> dict[str, int]:
    """What an in-tree setuptools build writes into the checkout, with modification times."""
    traces = [REPO / "build", *(REPO / "src").glob("*.egg-info/SOURCES.txt")]
    return {str(p): p.stat().st_mtime_ns for p in traces if p.exists()}


@pytest.fixture(scope="module")
def slim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("slim")
    before = _build_traces()
    _run(REPO / "scripts" / "build_wheel.sh", work / "dist", env={**os.environ, "PYTHON": sys.executable})
    # built from a private copy: a second build of this checkout at once shares nothing with this one
    assert _build_traces() == before
    wheel = next((work / "dist").glob("deepfake_detection-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("default.onnx", "default.onnx.sha256", "default.safetensors", "default.safetensors.sha256",
                 "MODEL_CARD.md"):
        assert f"deepfake_detection/bundled/{name}" in names, name
    assert not any("dfd_testkit" in n or n.startswith("tests/") for n in names)  # helpers stay out
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", venv)
    _run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         f"{wheel}[serve]")
    python = venv / "bin" / "python"
    assert subprocess.run([python, "-c", "import torch"], capture_output=True).returncode != 0
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run(python, "-c", purelib).stdout.strip())
    print(f"\nslim install: {_size_mb(site):.0f} MB of site-packages "
          f"(wheel {wheel.stat().st_size / 2**20:.1f} MB)")
    return venv


def test_slim_install_detects_like_the_full_one(slim: Path, tmp_path: Path) -> None:
    version = _run(slim / "bin" / "dfd", "--version").stdout
    assert "bundled model dfd-default" in version
    out = _run(slim / "bin" / "dfd", "detect", REPO / "samples", "--format", "jsonl", cwd=tmp_path).stdout
    slim_results = {Path(r["path"]).name: r for r in map(json.loads, out.splitlines())}
    full = tmp_path / "full.jsonl"
    assert main(["detect", str(REPO / "samples"), "--format", "jsonl", "-o", str(full)]) == 0
    full_results = {Path(r["path"]).name: r for r in map(json.loads, full.read_text().splitlines())}
    assert slim_results.keys() == full_results.keys() and len(slim_results) >= 5
    for name, row in slim_results.items():
        assert row["status"] == full_results[name]["status"] and row["label"] == full_results[name]["label"]
        if row["fake_probability"] is not None:
            assert abs(row["fake_probability"] - full_results[name]["fake_probability"]) < 1e-4, name


def test_slim_install_serves(slim: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DFD_JOBS_DIR": str(tmp_path / "jobs"), "DFD_PORT": str(port)}
    server = subprocess.Popen([slim / "bin" / "dfd", "serve"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline, ready = time.monotonic() + 60, None
        while time.monotonic() < deadline and ready is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                    ready = json.loads(response.read())
            except OSError:
                time.sleep(0.2)
        assert ready is not None and ready["status"] == "ready" and ready["explain_method"] == "occlusion"
        print(f"\nslim dfd serve RSS after start: {_rss_mb(server.pid):.0f} MB")
        server.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal: -SIGTERM (a container's PID 1,
        # where the re-raised signal is ignored, exits 0 instead; see test_container.py).
        assert server.wait(timeout=15) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
        _, err = server.communicate()
    assert "Application shutdown complete" in err and "occlusion maps" in err, err[-2000:]
