"""Memory of `dfd serve`: the default service against `--no-explain`.

Starts each in its own process and prints its resident memory (VmRSS) once ready, after `--requests`
detections of the 512x512 astronaut portrait, and (default service only) after 5 explanations, which
load PyTorch and the weights on first use.

    .venv/bin/python benchmarks/bench_serve_memory.py [--requests 100]
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

from bench_serve import serve_process


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def measure(explain: bool, requests: int, image: bytes) -> dict[str, float]:
    import httpx

    figures = {}
    with tempfile.TemporaryDirectory() as jobs, serve_process([], jobs, explain=explain) as (url, pid):
        figures["ready"] = rss_mib(pid)
        upload = {"file": ("astronaut.jpg", image, "image/jpeg")}
        for _ in range(requests):
            httpx.post(url + "/v1/detect", files=upload, timeout=60).raise_for_status()
        figures[f"after {requests} detections"] = rss_mib(pid)
        if explain:
            for _ in range(5):
                httpx.post(url + "/v1/detect?explain=true", files=upload, timeout=300).raise_for_status()
            figures["after 5 explanations"] = rss_mib(pid)
    return figures


def main() -> None:
    from PIL import Image
    from skimage import data

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, format="JPEG")
    for name, explain in (("dfd serve (default)", True), ("dfd serve --no-explain", False)):
        figures = measure(explain, args.requests, buffer.getvalue())
        print(f"{name:<24} " + ", ".join(f"{k}: {v:.0f} MiB" for k, v in figures.items()))


if __name__ == "__main__":
    main()
