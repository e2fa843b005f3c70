"""Running the app under uvicorn: `run` for `dfd serve`, `running_server` for tests and benchmarks."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from deepfake_detection.serve.settings import ServeSettings

STREAM_FRAME_BYTES = 4 * 1024 * 1024  # a webcam JPEG is ~50 KB; the only WebSocket messages we take


def uvicorn_config(settings: ServeSettings, **overrides: Any) -> Any:
    import uvicorn

    from deepfake_detection.serve.app import create_app
    from deepfake_detection.serve.connections import ConnectionGuard, guarded_protocol

    app = create_app(settings)
    metrics = app.state.service.metrics
    guard = ConnectionGuard(per_client=settings.max_client_connections, total=settings.max_connections,
                            header_timeout=settings.header_timeout, body_timeout=settings.body_timeout,
                            on_close=lambda reason: metrics.connections_closed.labels(reason).inc())
    options: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "log_level": "info",
        # No limit_concurrency: its 503s hit /healthz too and never reached /metrics. The app admits
        # requests itself (AdmissionMiddleware) and the protocol caps connections (serve/connections.py).
        "http": guarded_protocol(guard),
        "ws_max_size": min(settings.max_upload_bytes, STREAM_FRAME_BYTES),
        "timeout_graceful_shutdown": 10,
        "server_header": False,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


class _NoTraceForUserErrors(logging.Filter):
    """Start-up failures caused by the user (a wrong --model) were logged in one line already:
    uvicorn's copy of the traceback is dropped."""

    def __init__(self, service: Any) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.service.startup_error and str(record.msg).startswith("Traceback"))


def run(settings: ServeSettings) -> int:
    """Serve until interrupted; 1 when start-up failed (the reason is logged)."""
    import uvicorn

    config = uvicorn_config(settings)
    server = uvicorn.Server(config)
    hide = _NoTraceForUserErrors(config.app.state.service)
    logging.getLogger("uvicorn.error").addFilter(hide)
    try:
        server.run()
    except SystemExit:  # uvicorn exits (code 3) when start-up failed; the reason was logged in one line
        if not config.app.state.service.startup_error:
            raise
    finally:
        logging.getLogger("uvicorn.error").removeFilter(hide)
    return 0 if server.started else 1


@contextmanager
def running_server(settings: ServeSettings, *, timeout: float = 120.0) -> Iterator[str]:
    """Serve on a thread of this process (settings.port 0: a free port); yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn_config(settings, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="dfd-serve")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
