"""Benchmark `dfd live` on generated 720p H.264 clips with one and with four faces.

For each clip it runs the real live pipeline (file source, headless, no --realtime: every frame is
processed as fast as possible: threaded capture, detection every k frames on a worker thread,
IoU tracking, batched re-scoring every m frames, overlay) and the plain loop (read, detect, crop,
classify every face, draw: every frame, one thread of control), and prints frames/s, per-frame
latency and the time of each stage side by side. Faces are pasted from public-domain portraits.

    .venv/bin/python benchmarks/bench_live.py [--frames 300] [--cores 2] [--model FILE]

Per-frame latency is end to end in both columns: from the moment decoding of the frame starts to
the annotated frame being handed to the video writer / window. Live: stamped by the capture
thread when it starts reading the frame, so it includes decoding, the wait in the capture queue,
tracking, classification and drawing; the file source gets a 1-frame queue (the default queues 8
decoded frames ahead, which would add up to 8 frame times of waiting that a camera source, which
keeps only the newest frame, never has). Plain: read + detect + crop + classify + draw. The stage
rows are per-frame means; in the live column capture runs on the capture thread and detection on
the detector thread, and "detect" is the time of one detection divided by the frames it serves (k).

A third run plays the clip at its own pace (`--realtime`, 30 fps, newest frame only), as a camera
delivers frames: its latency is what a viewer of `dfd live` on a 30 fps camera sees, with no
frame waiting behind a slower one.

Warm-up: both paths first run over a short warm-up clip (model and detector sessions created and
run once). Each live run starts its own detector thread, whose detector is created and warmed at
the first frame, in parallel with the first detection, as in every `dfd live` session.

The clips are a best case for the tracker: faces slide at constant speed on a still background,
exactly the constant-velocity motion it predicts between detections. Real footage (turning heads,
camera shake, cuts) costs the same per frame but tracks less tightly.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

TARGETS = {1: (60.0, 33.0), 4: (25.0, None)}  # faces: (min frames/s, max p95 latency ms)
STAGES = ("capture", "detect", "track", "crop", "classify", "draw")


def plain_loop(predictor, clip: Path) -> dict:  # type: ignore[no-untyped-def]
    """Detect and classify every frame, no threads: the baseline."""
    import cv2

    from deepfake_detection.infer.render import draw_result

    cap = cv2.VideoCapture(str(clip))
    sums = dict.fromkeys(STAGES, 0.0)
    latencies = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()  # end-to-end latency starts when decoding starts, as the live stamp
        ok, frame = cap.read()
        if not ok:
            break
        read_ms = (time.perf_counter() - t0) * 1000
        result = predictor.predict(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        t1 = time.perf_counter()
        draw_result(frame, result, bgr=True)
        draw_ms = (time.perf_counter() - t1) * 1000
        for key in ("detect", "crop", "classify"):
            sums[key] += result.timings_ms.get(key, 0.0)
        sums["capture"] += read_ms
        sums["draw"] += draw_ms
        latencies.append((time.perf_counter() - t0) * 1000)
    seconds = time.perf_counter() - start
    cap.release()
    n = len(latencies)
    return {"frames": n, "fps": n / seconds, "p50": float(np.percentile(latencies, 50)),
            "p95": float(np.percentile(latencies, 95)), "stages": {k: v / n for k, v in sums.items()}}


def live_loop(predictor, clip: Path, realtime: bool = False) -> dict:  # type: ignore[no-untyped-def]
    from deepfake_detection.live.run import run_live

    # latencies: end to end (docstring); realtime: the clip is read at its own pace, like a camera
    s = run_live(predictor, str(clip), display=False, queue_size=1, realtime=realtime)
    stages = {k: s.stage_ms.get(k, 0.0) for k in STAGES}
    stages["detect"] = s.detect_ms * s.detections / max(s.frames, 1)
    return {"frames": s.frames, "fps": s.fps, "p50": s.percentile(50), "p95": s.percentile(95),
            "stages": stages, "detections": s.detections, "detect_call_ms": s.detect_ms, "tracks": s.tracks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300, help="frames per clip (30 fps)")
    parser.add_argument("--cores", type=int, default=2, help="pin the process to this many cores (0: all)")
    parser.add_argument("--faces", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--model", help="model file; default: the bundled model")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.cores:  # before any runtime starts its thread pools (available_cores() reads the affinity)
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])

    from deepfake_detection.infer.predictor import Predictor
    from deepfake_detection.runtime import available_cores
    from dfd_testkit.synthetic import moving_face_clip

    predictor = Predictor.load(args.model)
    spec = predictor.spec
    print(f"model {spec.name or spec.arch} ({spec.arch}, {spec.input_size}px, {predictor.backend.name}); "
          f"detector {predictor.detector_name}; {available_cores()} cores")
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for faces in args.faces:
            shape = {"size": (720, 1280), "count": faces, "scale": 1.0, "fps": 30.0}
            clip = moving_face_clip(Path(tmp) / f"faces{faces}.mp4", np.random.default_rng(faces),
                                    n=args.frames, h264=True, **shape)  # type: ignore[arg-type]
            warm = moving_face_clip(Path(tmp) / "warm.mp4", np.random.default_rng(0), n=10,
                                    **shape)  # type: ignore[arg-type]
            plain_loop(predictor, warm)  # sessions and caches warm for both
            live_loop(predictor, warm)
            live, plain = live_loop(predictor, clip), plain_loop(predictor, clip)
            camera = live_loop(predictor, clip, realtime=True)
            report[faces] = {"live": live, "plain": plain, "live_camera_pace": camera}
            fps_target, p95_target = TARGETS.get(faces, (None, None))
            print(f"\n{faces} face(s), {args.frames} frames 1280x720 H.264 (live: {live['detections']} "
                  f"detections of {live['detect_call_ms']:.1f} ms, {live['tracks']} tracks)")
            print(f"{'':<22}{'live':>10}{'plain':>10}")
            print(f"{'frames/s':<22}{live['fps']:>10.1f}{plain['fps']:>10.1f}"
                  + (f"   target >= {fps_target:g}" if fps_target else ""))
            print(f"{'latency p50 (ms)':<22}{live['p50']:>10.1f}{plain['p50']:>10.1f}")
            print(f"{'latency p95 (ms)':<22}{live['p95']:>10.1f}{plain['p95']:>10.1f}"
                  + (f"   target <= {p95_target:g}" if p95_target else ""))
            for stage in STAGES:
                row = f"{stage + ' (ms/frame)':<22}"
                print(f"{row}{live['stages'][stage]:>10.2f}{plain['stages'][stage]:>10.2f}")
            print(f"live at camera pace (--realtime, 30 fps source): {camera['fps']:.1f} frames/s shown, "
                  f"latency p50 {camera['p50']:.1f} ms, p95 {camera['p95']:.1f} ms"
                  + (f"   target <= {p95_target:g}" if p95_target else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
