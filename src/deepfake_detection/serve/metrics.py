"""Prometheus metrics, one registry per app (so several apps in one process, e.g. tests, never clash)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deepfake_detection.infer.results import ImageResult

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Latency buckets for CPU inference: 5 ms .. 30 s.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)
_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD"})  # any other: "other"
_FAKE_WINDOW = 200  # the fake-rate gauge covers this many latest images
# No *_created series: they double the output and no dashboard here uses them (a process-wide switch).
disable_created_metrics()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("dfd_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "method", "status"], registry=r)
        self.errors = Counter("dfd_request_errors", "HTTP requests answered with a 4xx or 5xx status",
                              ["endpoint", "status"], registry=r)
        self.latency = Histogram("dfd_request_duration_seconds", "HTTP request latency by endpoint",
                                 ["endpoint"], buckets=_BUCKETS, registry=r)
        self.images = Counter("dfd_images", "images and video/stream frames processed", ["source"],
                              registry=r)
        self.faces = Counter("dfd_faces", "faces found and scored", registry=r)
        self.fakes = Counter("dfd_fake_images", "processed images labelled fake", registry=r)
        self.fake_rate = Gauge("dfd_fake_rate", f"share of fakes in the last {_FAKE_WINDOW} scored images",
                               registry=r)
        self.queue_depth = Gauge("dfd_queue_depth", "requests waiting for an inference worker", registry=r)
        self.busy_workers = Gauge("dfd_busy_workers", "inference workers running a request", registry=r)
        self.stream_dropped = Counter("dfd_stream_frames_dropped", "live frames replaced by newer ones",
                                      registry=r)
        self.jobs = Gauge("dfd_video_jobs", "video jobs by state", ["state"], registry=r)
        self.connections_closed = Counter(
            "dfd_connections_closed", "connections the service closed or refused itself, by reason: "
            "header_timeout, body_timeout, stream_idle, evicted, client_limit (429), total_limit (503)",
            ["reason"], registry=r)
        self.model = Gauge("dfd_model_info", "the loaded model (value 1)",
                           ["name", "arch", "sha256", "backend"], registry=r)
        self._recent_labels: deque[bool] = deque(maxlen=_FAKE_WINDOW)
        self._lock = threading.Lock()

    def bind(self, queue_depth: Callable[[], float], busy: Callable[[], float],
             jobs: Callable[[], dict[str, int]]) -> None:
        """Gauges read live values at scrape time."""
        self.queue_depth.set_function(queue_depth)
        self.busy_workers.set_function(busy)
        self._jobs = jobs

    def observe_result(self, result: ImageResult, source: str) -> None:
        self.images.labels(source).inc()
        self.faces.inc(len(result.faces))
        if result.label is None:
            return
        fake = result.label == "fake"
        if fake:
            self.fakes.inc()
        with self._lock:
            self._recent_labels.append(fake)
            self.fake_rate.set(sum(self._recent_labels) / len(self._recent_labels))

    def render(self) -> bytes:
        jobs = getattr(self, "_jobs", None)
        if jobs is not None:
            for state, count in jobs().items():
                self.jobs.labels(state).set(count)
        return generate_latest(self.registry)


def route_template(app: Any, scope: Scope) -> str:
    """The route's path template (/v1/jobs/{job_id}), so metrics labels stay few; 'other' if none.
    A route whose path matches but not its method (405) counts under its template too."""
    partial = "other"
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "other"))
        if match == Match.PARTIAL and partial == "other":
            partial = str(getattr(route, "path", "other"))
    return partial


class MetricsMiddleware:
    """Counts and times every HTTP request by endpoint template and status (pure ASGI: sees the status
    of every response, errors included)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, router_app: Any) -> None:
        self.app = app
        self.metrics = metrics
        self.router_app = router_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            endpoint = route_template(self.router_app, scope)
            m = self.metrics
            # Labels come from fixed sets only (route templates, known methods): a client cannot create
            # new time series by sending odd paths or methods.
            method = scope.get("method", "")
            m.requests.labels(endpoint, method if method in _METHODS else "other", str(status)).inc()
            if status >= 400:
                m.errors.labels(endpoint, str(status)).inc()
            m.latency.labels(endpoint).observe(time.perf_counter() - start)
