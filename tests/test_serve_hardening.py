"""`dfd serve` against hostile clients, on a real uvicorn server on loopback: DNS rebinding, half-sent
requests, stalled uploads, idle streams, its own refusals in /metrics, lazy explanations, a bad
--jobs-dir."""

from __future__ import annotations

import base64
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")

from deepfake_detection.infer.predictor import Predictor  # noqa: E402
from deepfake_detection.serve import ServeSettings  # noqa: E402
from deepfake_detection.serve.hosts import allowed_hosts, host_allowed  # noqa: E402
from deepfake_detection.serve.server import running_server  # noqa: E402

FAST = {"header_timeout": 1.5, "body_timeout": 1.5, "stream_idle_timeout": 1.5}


def jpeg(image: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load()


@pytest.fixture
def server(tmp_path: Path, predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Start a service with these settings (the shared bundled predictor); yields (url, port)."""
    from contextlib import ExitStack

    import deepfake_detection.serve.app as app_module

    real_create = app_module.create_app
    monkeypatch.setattr("deepfake_detection.serve.app.create_app",
                        lambda settings=None, **kw: real_create(settings, predictor=predictor))
    with ExitStack() as stack:
        def start(**options: Any) -> tuple[str, int]:
            settings = ServeSettings(**{"port": 0, "jobs_dir": tmp_path / f"jobs{time.monotonic_ns()}",
                                        "explain": False, "workers": 2, **FAST, **options})
            url = stack.enter_context(running_server(settings))
            return url, int(url.rsplit(":", 1)[1])

        yield start


class Stream(socket.socket):
    pending = b""  # bytes read past the handshake


def ws_handshake(port: int, *, host: str = "localhost", origin: str | None = None,
                 path: str = "/v1/stream") -> Stream:
    """A raw WebSocket upgrade; returns the socket after the server's 101 (asserted)."""
    sock = Stream(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if origin:
        lines.append(f"Origin: {origin}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed during the handshake: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head[:200]
    sock.pending = head.split(b"\r\n\r\n", 1)[1]
    return sock


def close_code(sock: Stream, timeout: float = 10.0) -> int:
    """Read frames until the server's close frame; its status code."""
    sock.settimeout(timeout)
    data = sock.pending
    while True:
        if len(data) >= 2:
            length = data[1] & 0x7F
            start = 2 if length < 126 else 4 if length == 126 else 10
            if length >= 126 and len(data) >= start:
                length = struct.unpack(">H" if start == 4 else ">Q", data[2:start])[0]
            if len(data) >= start + length:
                if data[0] & 0x0F == 0x8:
                    return int(struct.unpack(">H", data[start:start + 2])[0])
                data = data[start + length:]
                continue
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed without a close frame")
        data += chunk


# --- 1. DNS rebinding ---------------------------------------------------------------------------------

def test_host_allow_list_rules() -> None:
    hosts = allowed_hosts(["dfd.example.org", ".corp.example"], "127.0.0.1")
    for ok in ("localhost:8000", "127.0.0.1", "[::1]:8000", "DFD.example.org", "a.corp.example", None):
        assert host_allowed(ok, hosts), ok
    for bad in ("evil.example", "evil.example:8000", "127.0.0.1.nip.io", "corp.example.evil"):
        assert not host_allowed(bad, hosts), bad
    assert host_allowed("10.0.0.5:80", allowed_hosts([], "10.0.0.5"))  # the bound address
    assert not host_allowed("10.0.0.5", allowed_hosts([], "0.0.0.0"))  # a wildcard names no host
    assert host_allowed("anything", allowed_hosts(["*"], "127.0.0.1"))


def test_a_rebound_name_gets_nothing(server: Any) -> None:
    """A page on evil.example whose name now resolves to 127.0.0.1: its requests carry Host:
    evil.example; they are refused, the stream closes with 1008 (a page of the service itself, and a
    name the operator allowed, still work)."""
    url, port = server(allowed_hosts=["dfd.example.org"])
    evil = {"Host": "evil.example"}
    assert httpx.get(url + "/v1/recent", headers=evil).status_code == 400
    assert httpx.get(url + "/", headers=evil).status_code == 400
    assert httpx.get(url + "/healthz", headers=evil).status_code == 200  # probes: nothing to steal
    assert httpx.get(url + "/v1/recent").status_code == 200
    assert httpx.get(url + "/v1/recent", headers={"Host": "dfd.example.org"}).status_code == 200
    rebound = ws_handshake(port, host=f"evil.example:{port}", origin=f"http://evil.example:{port}")
    assert close_code(rebound) == 1008
    stream = ws_handshake(port, host=f"localhost:{port}", origin=f"http://localhost:{port}")
    stream.settimeout(0.5)
    with pytest.raises(TimeoutError):  # accepted: open and waiting for frames
        stream.recv(1)
    stream.close()


# --- 2. one client cannot take the service down ---------------------------------------------------

def test_half_sent_requests_do_not_block_the_service(server: Any) -> None:
    url, port = server()
    stalled = []
    for _ in range(110):  # headers that never finish (slowloris)
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET /v1/recent HTTP/1.1\r\nHost: localhost\r\n")
        stalled.append(sock)
    start = time.monotonic()
    assert httpx.get(url + "/healthz", timeout=5).status_code == 200
    assert httpx.get(url + "/v1/recent", timeout=5).status_code == 200  # the same address, too
    assert time.monotonic() - start < 3
    time.sleep(FAST["header_timeout"] + 1.5)
    still_open = 0
    for sock in stalled:
        sock.settimeout(0.2)
        try:
            data = sock.recv(200)
            assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:80]
        except TimeoutError:
            still_open += 1
        except ConnectionResetError:
            pass
        sock.close()
    assert still_open == 0
    metrics = httpx.get(url + "/metrics").text
    assert 'dfd_connections_closed_total{reason="header_timeout"}' in metrics
    assert 'dfd_connections_closed_total{reason="evicted"}' in metrics


def test_a_stalled_upload_is_closed(server: Any) -> None:
    url, port = server()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; "
                 b"boundary=x\r\nContent-Length: 100000\r\n\r\n--x\r\n")
    start = time.monotonic()
    sock.settimeout(10)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    assert time.monotonic() - start < FAST["body_timeout"] + 3  # closed, not held for ever
    assert 'reason="body_timeout"' in httpx.get(url + "/metrics").text


def test_idle_and_surplus_streams(server: Any) -> None:
    url, port = server()
    streams = [ws_handshake(port) for _ in range(4)]
    assert close_code(ws_handshake(port)) == 1008  # a fifth from one client
    assert httpx.get(url + "/healthz").status_code == 200
    assert [close_code(s) for s in streams] == [1001] * 4  # idle: closed after stream_idle_timeout
    assert 'reason="stream_idle"' in httpx.get(url + "/metrics").text


def test_refusals_of_the_service_are_in_metrics(server: Any, predictor: Predictor,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """At capacity: 503 with Retry-After, counted in /metrics; /healthz still answers."""
    monkeypatch.setattr("deepfake_detection.serve.app.SPARE_REQUESTS", 0)
    release = threading.Event()
    real_predict = predictor.predict

    def slow_predict(*args: Any, **kwargs: Any) -> Any:
        release.wait(10)
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(predictor, "predict", slow_predict)
    url, _ = server(workers=1, queue=0, video_queue=0)  # room for one request
    image = jpeg(np.zeros((64, 64, 3), np.uint8))
    holder = threading.Thread(target=lambda: httpx.post(url + "/v1/detect", timeout=30,
                                                        files={"file": ("a.jpg", image, "image/jpeg")}))
    holder.start()
    deadline = time.monotonic() + 10
    while True:
        refused = httpx.get(url + "/v1/recent")
        if refused.status_code == 503 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert httpx.get(url + "/healthz").status_code == 200
    release.set()
    holder.join()
    metrics = httpx.get(url + "/metrics").text
    assert 'dfd_requests_total{endpoint="/v1/recent",method="GET",status="503"}' in metrics


# --- 3. memory: explanations load their weights on first use --------------------------------------

def _mapped(pid: int, name: str) -> bool:
    return name in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.slow  # a service in its own process
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_explanations_load_pytorch_only_when_asked(tmp_path: Path, astronaut: np.ndarray) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "deepfake_detection.cli", "serve", "--port", str(port),
                             "--jobs-dir", str(tmp_path / "jobs")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the service did not start"
            time.sleep(0.2)
        assert httpx.get(url + "/readyz").json()["explain"] is True
        assert not _mapped(proc.pid, "libtorch_cpu")  # a default service has not loaded PyTorch
        response = httpx.post(url + "/v1/detect?explain=true", timeout=120,
                              files={"file": ("a.jpg", jpeg(astronaut), "image/jpeg")})
        assert response.status_code == 200 and response.json()["explanations"]
        assert _mapped(proc.pid, "libtorch_cpu")
    finally:
        proc.terminate()
        proc.wait(30)


# --- 4. an unwritable jobs folder -------------------------------------------------------------------

def test_an_unwritable_jobs_folder_is_one_line(capfd: pytest.CaptureFixture[str],
                                               caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    from deepfake_detection.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["serve", "--port", "0", "--no-explain", "--jobs-dir", str(blocker / "jobs")]) == 1
    err = capfd.readouterr().err + caplog.text
    assert "cannot use the jobs folder" in err and "Not a directory" in err and "Traceback" not in err
