"""The inference contract: Predictor.load builds an immutable predictor whose overrides work or are
refused, whose face detectors are safe under threads, and whose entry points never import torch."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deepfake_detection.errors import DFDError, ModelError
from deepfake_detection.faces import Face, UnknownDetectorError
from deepfake_detection.infer.predictor import Predictor
from deepfake_detection.io.images import load_image

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load()


def test_settings_are_read_only(predictor: Predictor) -> None:
    for name in ("spec", "threshold", "max_pixels", "batch_size", "backend"):
        with pytest.raises(AttributeError):
            setattr(predictor, name, getattr(predictor, name))


def test_threshold_and_pixel_overrides_work(predictor: Predictor) -> None:
    strict = Predictor(predictor.backend, threshold=0.0)
    result = strict.predict(SAMPLES / "grace_hopper.jpg")
    assert strict.spec.threshold == result.threshold == 0.0 and result.label == "fake"
    assert predictor.spec.threshold != 0.0  # the original is untouched
    tiny = Predictor(predictor.backend, max_pixels=1000)
    refused = tiny.predict(SAMPLES / "astronaut.jpg")
    assert refused.status == "error" and "DecompressionBombError" in (refused.error or "")


def test_overrides_that_cannot_work_are_refused(predictor: Predictor) -> None:
    with pytest.raises(DFDError, match="threshold"):
        Predictor(predictor.backend, threshold=1.5)
    with pytest.raises(DFDError, match="max_pixels"):
        Predictor(predictor.backend, max_pixels=0)
    with pytest.raises(UnknownDetectorError):
        Predictor.load(detector="nope")
    with pytest.raises(ModelError, match="device"):
        Predictor.load(backend="onnx", device="cuda")
    with pytest.raises(ModelError, match="backend kind"):
        Predictor.load(backend="tensorrt")  # type: ignore[arg-type]


class _Exclusive:
    """A detector that fails the test if two threads ever use it at once (as OpenCV's cascade may not)."""

    def __init__(self, threads: int | None, made: list[int | None], inner: Predictor) -> None:
        self.busy = threading.Lock()
        self.inner = inner
        made.append(threads)

    def detect(self, image: np.ndarray) -> list[Face]:
        if not self.busy.acquire(blocking=False):
            raise AssertionError("a detector was used by two threads at once")
        try:
            time.sleep(0.01)  # widen the window in which a second thread could come in
            return self.inner.detect_faces(image)
        finally:
            self.busy.release()


def test_concurrent_calls_never_share_a_detector(predictor: Predictor) -> None:
    made: list[int | None] = []
    shared = Predictor(predictor.backend, detector=lambda threads: _Exclusive(threads, made, predictor))  # type: ignore[arg-type,return-value]
    image = load_image(SAMPLES / "astronaut.jpg")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: shared.predict(image), range(16)))
    assert all(r.status == "ok" and len(r.faces) == 1 for r in results)
    # One all-cores detector made at load; the threads that found it busy made one-thread ones.
    assert made[0] is None and len(made) > 1 and set(made[1:]) == {1}


def test_folders_give_each_worker_its_own_detector(predictor: Predictor) -> None:
    made: list[int | None] = []
    shared = Predictor(predictor.backend, detector=lambda threads: _Exclusive(threads, made, predictor))  # type: ignore[arg-type,return-value]
    paths = [str(p) for p in sorted(SAMPLES.glob("*.jpg"))] * 3
    results = list(shared.predict_many(paths, workers=3))
    assert [r.path for r in results] == paths
    assert made.count(1) <= 3  # at most one per worker thread


def test_version_names_the_bundled_model(capsys: pytest.CaptureFixture[str]) -> None:
    from deepfake_detection.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    assert "dfd 0.1.0" in out and "bundled model dfd-default" in out and "sha256" in out


_NO_TORCH = """
import sys
sys.modules["torch"] = None  # as on the slim install: `import torch` fails
import deepfake_detection
from deepfake_detection.cli import main
code = main(["detect", *sys.argv[1:], "--format", "jsonl"])
assert code == 0, code
from fastapi.testclient import TestClient
from deepfake_detection.serve import ServeSettings, create_app
import tempfile
app = create_app(ServeSettings(jobs_dir=tempfile.mkdtemp()))
with TestClient(app, base_url="http://localhost") as client:  # a loopback Host (DNS rebinding check)
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["explain_method"] == "occlusion", ready
    with open(sys.argv[1], "rb") as f:
        body = client.post("/v1/detect?explain=true", files={"file": ("a.jpg", f, "image/jpeg")}).json()
    assert body["status"] == "ok" and body["explanations"][0]["method"] == "occlusion", body
import deepfake_detection.live.run, deepfake_detection.scan.stages, deepfake_detection.infer.render
heavy = ("torch", "timm", "torchvision", "safetensors", "onnx", "pandas", "matplotlib", "albumentations")
loaded = sorted(m for m, module in sys.modules.items() if module is not None and m.split(".")[0] in heavy)
assert not loaded, loaded
print("slim ok")
"""


def test_inference_entry_points_never_import_torch(tmp_path: Path) -> None:
    """detect, serve (explanations by occlusion), live and scan run with torch unimportable."""
    done = subprocess.run([sys.executable, "-c", _NO_TORCH, str(SAMPLES / "astronaut.jpg"),
                           str(SAMPLES / "coffee_no_face.jpg")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0 and "slim ok" in done.stdout, done.stderr[-3000:]


class _Stop(DFDError):
    """Raised by the spy once it has seen the arguments: the command ends there."""


@pytest.mark.parametrize("command", [
    ["detect", str(SAMPLES / "astronaut.jpg"), "--max-pixels", "10000000"],
    ["live", "--source", str(SAMPLES / "astronaut.jpg"), "--no-display"],
    ["scan", str(SAMPLES), "-o", "unused.parquet", "--max-pixels", "10000000"],
    ["serve", "--port", "0", "--max-pixels", "10000000", "--no-explain"],
])
def test_entry_points_build_through_predictor_load(command: list[str], monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    """Every command hands its model flags to Predictor.load, where they work or are refused."""
    from deepfake_detection.cli import main
    from deepfake_detection.infer.bundled import default_model_path

    seen: list[dict[str, Any]] = []

    def spy(cls: type[Predictor], model: Any = None, **kwargs: Any) -> Predictor:
        seen.append({"model": model, **kwargs})
        raise _Stop("seen")

    monkeypatch.setattr(Predictor, "load", classmethod(spy))
    monkeypatch.setenv("DFD_JOBS_DIR", str(tmp_path / "jobs"))
    monkeypatch.chdir(tmp_path)
    model = str(default_model_path())
    flags = ["--model", model, "--threshold", "0.25", "--detector", "haar", "--backend", "onnx"]
    try:
        code = main([*command, *flags])
    except SystemExit as exc:  # uvicorn ends a failed start-up with exit status 3
        code = exc.code
    assert code in (1, 3) and seen, command
    call = seen[0]
    assert (str(call["model"]), call["threshold"], call["detector"], call["backend"]) == (
        model, 0.25, "haar", "onnx")
    if "--max-pixels" in command:
        assert call["max_pixels"] == 10_000_000


def test_face_sharpness_is_measured_at_one_size_whatever_the_model(predictor: Predictor,
                                                                   astronaut: np.ndarray) -> None:
    """Sharpness is read on the face framed by the model's protocol at REFERENCE_SIZE: the bundled
    model's own crops are reused, a model of another input size gets the same figure, and blur lowers it."""
    import cv2

    from deepfake_detection.faces import crop_faces
    from deepfake_detection.faces.quality import REFERENCE_SIZE, crop_sharpness, faces_sharpness

    faces = predictor.detect_faces(astronaut)
    protocol = predictor.spec.crop
    at_reference = crop_faces(astronaut, faces, REFERENCE_SIZE, protocol)
    expected = [crop_sharpness(c) for c in at_reference]
    assert faces_sharpness(astronaut, faces, protocol, at_reference) == expected
    assert faces_sharpness(astronaut, faces, protocol, crop_faces(astronaut, faces, 64, protocol)) == expected
    assert faces_sharpness(astronaut, faces, protocol) == expected
    blurred = cv2.GaussianBlur(astronaut, (0, 0), 2.0)
    assert faces_sharpness(blurred, faces, protocol)[0] < expected[0] / 4
    result = predictor.predict(astronaut)
    assert [f.sharpness for f in result.faces] == pytest.approx(expected) and not result.warnings
