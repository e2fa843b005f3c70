"""Benchmark `dfd serve` on loopback: concurrent clients posting images to /v1/detect.

Starts `dfd serve` in its own process and prints throughput, p50/p95 latency and the server's memory
before and after, next to the plain approach: calling Predictor.predict on the same images in a
loop, one after the other, in this process (no HTTP). Images are generated 320x240 JPEG scenes,
one public-domain face each.

    .venv/bin/python benchmarks/bench_serve.py [--requests 500] [--clients 16] [--workers N] [--model FILE]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


@contextmanager
def serve_process(extra: list[str], jobs: str, *, explain: bool = False) -> Iterator[tuple[str, int]]:
    """`dfd serve` on a free loopback port (`--no-explain` unless `explain`); yields (base URL, pid) once
    /readyz answers 200."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "deepfake_detection.cli", "serve", "--port", str(port),
           *([] if explain else ["--no-explain"]), "--jobs-dir", jobs, *extra]
    proc = subprocess.Popen(cmd, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                log = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"dfd serve did not start: {log}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    from deepfake_detection.infer.predictor import Predictor
    from dfd_testkit.loadgen import face_images, rss_mb, run_load

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, help="inference workers (default: the service's default)")
    parser.add_argument("--model", help="model file; default: the bundled model")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    args = parser.parse_args()
    images = face_images(8, (args.height, args.width))

    # The plain approach: one Predictor, one image after the other.
    predictor = Predictor.load(args.model)
    predictor.predict(images[0])
    latencies = []
    start = time.perf_counter()
    for i in range(args.requests):
        t = time.perf_counter()
        predictor.predict(images[i % len(images)])
        latencies.append(time.perf_counter() - t)
    plain_s = time.perf_counter() - start
    del predictor
    print(f"{args.requests} generated {args.width}x{args.height} JPEGs, one face each")
    print(f"plain Predictor.predict loop: {args.requests / plain_s:.1f} images/s, "
          f"p50 {np.percentile(latencies, 50) * 1000:.0f} ms, "
          f"p95 {np.percentile(latencies, 95) * 1000:.0f} ms")

    extra = ["--queue", str(max(32, args.clients))]
    extra += ["--workers", str(args.workers)] if args.workers else []
    extra += ["--model", args.model] if args.model else []
    with tempfile.TemporaryDirectory() as jobs, serve_process(extra, jobs) as (url, pid):
        run_load(url, images, requests=2 * args.clients, clients=args.clients)  # warm-up
        before = rss_mb(pid)
        report = run_load(url, images, requests=args.requests, clients=args.clients)
        after = rss_mb(pid)
    print(f"dfd serve over HTTP: {report.summary()}")
    print(f"server RSS: before {before:.0f} MiB, after {after:.0f} MiB ({after - before:+.0f} MiB)")


if __name__ == "__main__":
    main()
