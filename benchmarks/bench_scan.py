"""Benchmark `dfd scan` (Ray Data, local runtime) against single-process `dfd detect` on the same images.

Generates 640x480 JPEGs with one public-domain face each, then times:
  detect      `dfd detect DIR --format jsonl -o ...` (one process: decode/detect threads + classifier)
  scan cold   `dfd scan DIR -o ...` starting its own local Ray runtime (what one command costs)
  scan warm   the same scan on a runtime already running (what joining a cluster costs per scan)
and prints images/s of each (wall clock of the whole call, listing and model load included; the warm
scan leaves out only the runtime start and Ray Data's detached helper actors, which a cluster keeps
between jobs) and the ratio scan/detect. Both write every record; the outputs are checked to hold
the same paths and statuses.

    .venv/bin/python benchmarks/bench_scan.py [--images 1000] [--model FILE] [--classifier-cpus X]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def make_images(folder: Path, count: int, seed: int = 0) -> None:
    from dfd_testkit.synthetic import scene, write_image

    rng = np.random.default_rng(seed)
    for i in range(count):
        image = scene(rng, (480, 640), face=i, scale=rng.uniform(0.5, 1.0))
        write_image(folder / f"scene_{i:05d}.jpg", image)


def _ready() -> None:
    """A no-op task: returns once a worker could run it."""


def main() -> None:
    from deepfake_detection.cli import main as dfd
    from deepfake_detection.raycluster import ray_session
    from deepfake_detection.runtime import available_cores
    from deepfake_detection.scan import ScanConfig, scan
    from deepfake_detection.scan.pipeline import _quiet_ray_data
    from deepfake_detection.scan.schema import read_results

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--model", help="model file; default: the bundled model")
    parser.add_argument("--classifier-cpus", type=float, help="CPUs reserved per classifier actor")
    parser.add_argument("--no-cold", action="store_true", help="skip the scan that starts its own runtime")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        make_images(folder, args.images)
        print(f"{args.images} generated 640x480 JPEGs, one face each; {available_cores()} cores")
        model = ["--model", args.model] if args.model else []

        start = time.perf_counter()
        dfd(["detect", str(folder), "--format", "jsonl", "-o", str(Path(tmp) / "d.jsonl"), "--no-progress",
             *model])
        detect_rate = args.images / (time.perf_counter() - start)
        detected = {r["path"]: r["status"] for r in map(json.loads, (Path(tmp) / "d.jsonl").open())}
        print(f"dfd detect (1 process)      {detect_rate:7.1f} images/s")

        config = ScanConfig(model=args.model, classifier_cpus=args.classifier_cpus, progress=False)
        out = Path(tmp) / "s.parquet"
        if not args.no_cold:
            start = time.perf_counter()
            scan([str(folder)], out, config)  # starts and stops a local runtime
            cold = args.images / (time.perf_counter() - start)
            print(f"dfd scan, runtime start     {cold:7.1f} images/s  ({cold / detect_rate:.2f}x detect)")
        with ray_session(None) as ray:  # a running runtime: scan() joins it, as on a cluster
            # Running as a cluster runs: its prestarted workers are up (without this wait they were
            # still booting inside the timed scan), and Ray Data has run there before, so its three
            # detached helper actors (stats, actor locations, autoscaling) exist; a fresh runtime
            # starts them on the first dataset (~3 s of CPU on 2 cores, counted in the cold figure).
            ready = ray.remote(num_cpus=1)(_ready)
            ray.get([ready.remote() for _ in range(int(ray.cluster_resources().get("CPU", 1)))])
            with _quiet_ray_data():
                ray.data.range(1).materialize()
            start = time.perf_counter()  # wall clock as the others: listing and model load included
            scan([str(folder)], out, config)
            warm = args.images / (time.perf_counter() - start)
        print(f"dfd scan, runtime running   {warm:7.1f} images/s  ({warm / detect_rate:.2f}x detect)")
        scanned = {r["path"]: r["status"] for r in read_results(out)}
        assert scanned == detected, "scan and detect disagree on the inputs or their statuses"


if __name__ == "__main__":
    main()
