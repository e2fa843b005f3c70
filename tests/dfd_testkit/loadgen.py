"""A small load generator for the service (the load test and benchmarks/bench_serve.py share it):
N concurrent clients, each on its own keep-alive connection, sending images to /v1/detect."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import numpy as np


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process (default: this one) in MiB (Linux)."""
    with open(f"/proc/{pid or 'self'}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class LoadReport:
    requests: int
    clients: int
    seconds: float
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s else float("nan")

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    @property
    def server_errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code >= 500)

    def summary(self) -> str:
        return (f"{self.requests} requests, {self.clients} clients: {self.throughput:.1f} req/s, "
                f"p50 {self.percentile_ms(50):.0f} ms, p95 {self.percentile_ms(95):.0f} ms, "
                f"statuses {dict(sorted(self.statuses.items()))}")


def run_load(url: str, images: list[bytes], *, requests: int = 500, clients: int = 16,
             timeout: float = 120.0) -> LoadReport:
    """Send `requests` POST /v1/detect from `clients` threads (images in turn); time each one."""
    import httpx

    counter = itertools.count()
    lock = threading.Lock()
    report = LoadReport(requests, clients, 0.0)

    def client() -> None:
        with httpx.Client(base_url=url, timeout=timeout) as http:
            while (i := next(counter)) < requests:
                files = {"file": (f"img{i}.jpg", images[i % len(images)], "image/jpeg")}
                start = time.perf_counter()
                try:
                    status = http.post("/v1/detect", files=files).status_code
                except httpx.HTTPError:
                    status = 599  # a connection failure counts as a server error
                elapsed = time.perf_counter() - start
                with lock:
                    report.latencies_s.append(elapsed)
                    report.statuses[status] = report.statuses.get(status, 0) + 1

    threads = [threading.Thread(target=client, name=f"load-{n}") for n in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.seconds = time.perf_counter() - start
    return report


def face_images(count: int = 8, size: tuple[int, int] = (240, 320), seed: int = 0) -> list[bytes]:
    """JPEG scenes with one public-domain face each (see dfd_testkit.synthetic)."""
    import io

    from PIL import Image

    from dfd_testkit.synthetic import scene

    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.fromarray(scene(rng, size, face=i, scale=0.45)).save(buffer, format="JPEG", quality=85)
        out.append(buffer.getvalue())
    return out
