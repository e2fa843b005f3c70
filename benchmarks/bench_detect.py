"""Benchmark `dfd detect` on generated 720p JPEGs with one face each.

Prints images/s of the pipelined folder detection (`dfd detect`, decode/detect threads overlapping
batched classification) next to the time of each stage measured alone, one after the other: the
plain approach. Faces are pasted from public-domain portraits (scikit-image, matplotlib).

    .venv/bin/python benchmarks/bench_detect.py [--images 300] [--model FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def make_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """720p scenes, each with one public-domain portrait pasted at a random place and size."""
    from dfd_testkit.synthetic import scene, write_image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        image = scene(rng, (720, 1280), face=i, scale=rng.uniform(0.7, 1.4))
        paths.append(write_image(folder / f"scene_{i:04d}.jpg", image))
    return paths


def _percentiles(samples_ms: list[float]) -> str:
    a = np.asarray(samples_ms)
    return f"median {np.median(a):6.2f} ms   p95 {np.percentile(a, 95):6.2f} ms"


REFERENCE_MS = 5.38  # ../shared/docs/CPU_BASELINES.md: EfficientNet-B0 224, ORT 2 threads, batch 1


def _times_ms(call: Callable[[int], object], runs: int = 200, warmup: int = 30) -> list[float]:
    """Milliseconds of `call(i)` for each run after `warmup` untimed ones."""
    times = []
    for i in range(runs + warmup):
        start = time.perf_counter()
        call(i)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return times


def reference_speed(folder: Path) -> None:
    """This machine against the documented one: the same reference network (timm EfficientNet-B0 at
    224, random weights) through ONNX Runtime, so figures from a busy shared host can be read as
    ratios. Needs the `train` extra (torch, timm); skipped without it."""
    try:
        import timm
        import torch
    except ImportError:
        print("reference model: skipped (needs torch and timm)")
        return
    import onnxruntime as ort

    from deepfake_detection.runtime import ort_session_options

    path = folder / "reference_b0.onnx"
    net = timm.create_model("efficientnet_b0", pretrained=False).eval()
    torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), str(path), dynamo=False, opset_version=17)
    session = ort.InferenceSession(str(path), sess_options=ort_session_options(2),
                                   providers=["CPUExecutionProvider"])
    x = {session.get_inputs()[0].name: np.zeros((1, 3, 224, 224), np.float32)}
    ms = float(np.median(_times_ms(lambda _: session.run(None, x))))
    print(f"reference EfficientNet-B0 224, ONNX batch 1: median {ms:6.2f} ms (CPU_BASELINES.md, a quiet "
          f"2-core machine: {REFERENCE_MS} ms): this host runs at {REFERENCE_MS / ms:.2f}x that speed")


def latency(predictor: object, paths: list[Path], crops: list[np.ndarray], model: str | None) -> None:
    """One request at a time (a photo, a webcam frame): batch-1 classification and the whole pipeline,
    with ONNX Runtime (what `dfd detect` uses) and with eager PyTorch (the plain approach)."""
    from deepfake_detection.infer.backends import crop_probabilities, load_backend
    from deepfake_detection.infer.bundled import default_model_path
    from deepfake_detection.models.paths import weights_for

    torch_path = weights_for(Path(model) if model else default_model_path())
    backends = {"ONNX Runtime": predictor.backend}  # type: ignore[attr-defined]
    if torch_path is not None:
        backends["PyTorch eager"] = load_backend(torch_path, kind="torch")
    print("\nbatch 1 (one crop or one photo per call)")
    for name, backend in backends.items():
        times = _times_ms(lambda i, b=backend: crop_probabilities(b, [crops[i % len(crops)]], batch_size=1))
        print(f"  classify one face crop, {name:<14} {_percentiles(times)}")
    times = []
    for path in paths[:100]:
        start = time.perf_counter()
        predictor.predict(str(path))  # type: ignore[attr-defined]
        times.append((time.perf_counter() - start) * 1000)
    print(f"  one 720p JPEG, decode + detect + crop + classify (ONNX)  {_percentiles(times)}")


def main() -> None:
    from deepfake_detection.cli import main as dfd
    from deepfake_detection.faces import create_detector, crop_faces
    from deepfake_detection.infer.predictor import Predictor
    from deepfake_detection.io.images import load_image

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--model", help="model file; default: the bundled model")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_images(folder, args.images)
        predictor = Predictor.load(args.model)
        spec = predictor.spec
        print(f"{len(paths)} generated 1280x720 JPEGs, one face each; model {spec.name or spec.arch} "
              f"({spec.arch}, {spec.input_size}px, {predictor.backend.name}); detector "
              f"{predictor.detector_name}")
        predictor.predict(str(paths[0]))  # warm-up: sessions, caches

        # The plain approach: each stage alone over all images, one after the other.
        stages: dict[str, float] = {}
        start = time.perf_counter()
        images = [load_image(str(p)) for p in paths]
        stages["decode"] = time.perf_counter() - start
        start = time.perf_counter()
        detector = create_detector(predictor.detector_name)  # all cores, as the Predictor's shared one
        faces = [detector.detect(img) for img in images]
        stages["detect"] = time.perf_counter() - start
        start = time.perf_counter()
        crops = [c for img, f in zip(images, faces, strict=True)
                 for c in crop_faces(img, f, spec.input_size, spec.crop)]
        stages["crop"] = time.perf_counter() - start
        del images
        start = time.perf_counter()
        predictor.probabilities(crops)
        stages["classify (batches of 32)"] = time.perf_counter() - start
        found = sum(1 for f in faces if f)
        total = sum(stages.values())

        reference_speed(folder)
        latency(predictor, paths, crops, args.model)

        out = folder / "results.jsonl"
        start = time.perf_counter()
        argv = ["detect", str(folder), "--format", "jsonl", "-o", str(out), "--no-progress"]
        dfd(argv + (["--model", args.model] if args.model else []))
        pipeline = time.perf_counter() - start
        records = [json.loads(line) for line in out.read_text().splitlines()]
        ok = sum(r["status"] == "ok" for r in records)

    n = len(paths)
    print(f"\nfolder of {n} images\n{'stage alone':<28}{'total s':>9}{'ms/img':>9}{'img/s':>9}")
    for name, secs in stages.items():
        print(f"{name:<28}{secs:>9.2f}{secs / n * 1000:>9.1f}{n / secs:>9.1f}")
    print(f"{'sum of stages (plain loop)':<28}{total:>9.2f}{total / n * 1000:>9.1f}{n / total:>9.1f}")
    print(f"{'dfd detect (pipelined)':<28}{pipeline:>9.2f}{pipeline / n * 1000:>9.1f}{n / pipeline:>9.1f}"
          "   (includes model load and JSONL writing)")
    print(f"\nfaces found: stages {found}/{n}, dfd detect {ok}/{n}; pipelined / plain speed: "
          f"{total / pipeline:.2f}x")


if __name__ == "__main__":
    main()
