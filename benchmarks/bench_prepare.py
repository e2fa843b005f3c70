"""Benchmark `dfd prepare`: face crops/s from 720p JPEGs (detection included), crops/s with
`--cropped`, sampled frames/s from 720p H.264 clips, and peak memory at two dataset sizes.

Each figure is printed next to the plain approach measured in the same run: one process, one file
after another (decode, detect, crop, encode, write). All media is generated (public-domain faces).

    .venv/bin/python benchmarks/bench_prepare.py [--images 400] [--cropped 4000] [--clips 6]
        [--memory-sizes 2000 200000]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def _plain(paths: list[Path], out: Path, *, cropped: bool, video: bool = False, frames: int = 32) -> int:
    """The plain loop, single process: what a first script would do."""
    from deepfake_detection.faces import create_detector, crop_face
    from deepfake_detection.io.images import load_image
    from deepfake_detection.io.video import sample_frames

    detector = None if cropped else create_detector("retinaface")
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for i, path in enumerate(paths):
        images = [f for _, f in sample_frames(str(path), count=frames)] if video else [load_image(path)]
        for j, image in enumerate(images):
            if detector is None:
                crop = cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)
            else:
                faces = detector.detect(image)
                if not faces:
                    continue
                crop = crop_face(image, faces[0], 256)
            cv2.imwrite(str(out / f"{i}_{j}.jpg"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            count += 1
    return count


def _prepare(root: Path, out: Path, **options: object) -> tuple[float, dict]:
    """`dfd prepare` through its library call (the CLI is a thin layer over it), all cores."""
    from deepfake_detection.data.prepare import PrepareConfig, prepare

    start = time.perf_counter()
    summary = prepare([str(root)], out, PrepareConfig(dedup_distance=-1, **options), progress=False)  # type: ignore[arg-type]
    return time.perf_counter() - start, summary


def _row(name: str, units: int, unit: str, seconds: float, plain: float | None) -> None:
    speed = f"{units / plain:8.1f}" if plain else f"{'':>8}"
    ratio = f"{plain / seconds:6.2f}x" if plain else ""
    print(f"{name:<34}{units:>7} {unit:<7}{units / seconds:>9.1f}/s  plain {speed}/s  {ratio}")


def bench(args: argparse.Namespace, tmp: Path) -> None:
    from dfd_testkit.synthetic import moving_face_clip, scene, write_image
    from dfd_testkit.synthetic import portraits as _portraits

    rng = np.random.default_rng(0)
    print(f"{'':<34}{'count':>7} {'':<7}{'dfd prepare':>11}  {'plain loop':>16}  speed-up")

    root = tmp / "faces720"
    paths = [write_image(root / ("real" if i % 2 else "fake") / f"{i:05d}.jpg",
                         scene(rng, (720, 1280), face=i, scale=rng.uniform(0.7, 1.4)))
             for i in range(args.images)]
    seconds, summary = _prepare(root, tmp / "p1")
    start = time.perf_counter()
    _plain(paths[: max(args.images // 4, 1)], tmp / "plain1", cropped=False)
    plain = (time.perf_counter() - start) / max(args.images // 4, 1) * args.images
    _row("720p JPEG, detect + crop", summary["crops"], "crops", seconds, plain)
    seconds, summary = _prepare(root, tmp / "p1b", max_side=320)
    _row("  same, --max-side 320", summary["crops"], "crops", seconds, None)

    root = tmp / "cropped"  # aligned-face-like crops (about 300x240, as aaf_real), jittered portraits
    portraits = [cv2.resize(p, (240, 300), interpolation=cv2.INTER_AREA) for p in _portraits()]
    paths = []
    for i in range(args.cropped):
        face = np.clip(portraits[i % 2].astype(np.int16) + rng.integers(-20, 20, 3), 0, 255).astype(np.uint8)
        paths.append(write_image(root / ("real" if i % 2 else "fake") / f"{i:05d}.jpg", face))
    seconds, summary = _prepare(root, tmp / "p2", cropped=True, chunk_size=256)
    start = time.perf_counter()
    _plain(paths[: args.cropped // 4], tmp / "plain2", cropped=True)
    plain = (time.perf_counter() - start) * 4
    _row("--cropped face images", summary["crops"], "crops", seconds, plain)

    root = tmp / "clips"
    clips = [moving_face_clip(root / ("real" if i % 2 else "fake") / f"clip{i}.mp4", rng, n=150,
                              size=(720, 1280), face=i, h264=True) for i in range(args.clips)]
    seconds, summary = _prepare(root, tmp / "p3", frames=32, chunk_size=1)
    start = time.perf_counter()
    _plain(clips[:2], tmp / "plain3", cropped=False, video=True)
    plain = (time.perf_counter() - start) / 2 * len(clips)
    _row("720p H.264 clips, 32 frames each", summary["frames_sampled"], "frames", seconds, plain)


def memory(sizes: list[int], tmp: Path) -> None:
    """Peak RSS of `dfd prepare --cropped` (parent, and the largest worker) at each dataset size."""
    print(f"\n{'--cropped images':>16}{'parent MB':>11}{'worker MB*':>11}{'seconds':>9}")
    peaks = []
    for size in sizes:
        root = tmp / f"mem{size}"
        tiny = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))[1]
        for i in range(size):
            folder = root / ("real" if i % 2 else "fake") / f"{i // 1000:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}.jpg").write_bytes(tiny.tobytes())
        # VmHWM (not ru_maxrss, which a child inherits from its forking parent) is this process's peak.
        code = ("import re, resource, sys, time; from deepfake_detection.cli import main; t = time.time(); "
                f"rc = main(['prepare', {str(root)!r}, '--out', {str(tmp / f'memout{size}')!r}, '--cropped', "
                "'--no-progress', '--chunk-size', '512', '--crop-size', '64']); "
                "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
                "print(hwm, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.time() - t); "
                "sys.exit(rc)")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        parent_kb, child_kb, secs = result.stdout.split()[-3:]
        peaks.append(int(parent_kb))
        print(f"{size:>16}{int(parent_kb) / 1024:>11.0f}{int(child_kb) / 1024:>11.0f}{float(secs):>9.1f}")
    print(f"peak parent RSS ratio largest/smallest: {peaks[-1] / peaks[0]:.2f} (target <= 1.5)\n"
          "* an upper bound: Linux ru_maxrss of children includes the parent's size at fork")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--cropped", type=int, default=4000)
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[2000, 20000])
    # --images 0 --cropped 0 --clips 0: the memory measurement alone
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.images and args.cropped and args.clips:
            bench(args, Path(tmp))
        if args.memory_sizes:
            memory(args.memory_sizes, Path(tmp))
    print(f"\ncpu: {resource.getrusage(resource.RUSAGE_SELF).ru_utime:.0f}s user in this process")


if __name__ == "__main__":
    main()
