"""`dfd live`: capture, tracking, smoothing, the pipeline and the runner, on generated clips."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from deepfake_detection.cli import main
from deepfake_detection.faces import Face
from deepfake_detection.faces.tracking import IoUTracker
from deepfake_detection.infer.predictor import Predictor
from deepfake_detection.live import run as live_run
from deepfake_detection.live.capture import Capture, SourceError, parse_source, source_kind
from deepfake_detection.live.pipeline import LiveConfig, LivePipeline
from deepfake_detection.live.run import run_live
from deepfake_detection.live.smoothing import Smoother
from dfd_testkit.synthetic import moving_face_clip

# as in `dfd detect`
FACE_FIELDS = {"box", "detector_score", "fake_probability", "landmarks", "sharpness", "blurry"}


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load()


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    return moving_face_clip(folder / "two.mp4", np.random.default_rng(0), n=40, count=2)


def _count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def _face(x: float, y: float, side: float = 60.0) -> Face:
    return Face(np.array([x, y, x + side, y + side], np.float32), 0.99)


# --- tracking --------------------------------------------------------------------------------


def test_tracker_keeps_ids_and_carries_boxes_between_detections() -> None:
    tracker = IoUTracker()
    for frame in range(0, 30, 5):  # two faces moving 8 px/frame in opposite directions, seen every 5 frames
        tracks = tracker.update([_face(10 + 8 * frame, 20), _face(400 - 8 * frame, 200)], frame)
        assert [t.id for t in tracks] == [1, 2]
    moved = tracker.advance(27)  # between detections: constant velocity
    assert moved[0].box[0] == pytest.approx(10 + 8 * 27, abs=1.0)
    assert moved[1].box[0] == pytest.approx(400 - 8 * 27, abs=1.0)
    # A detection that arrives late (made on frame 30, applied now) still matches, and a new face gets id 3.
    tracks = tracker.update([_face(10 + 8 * 30, 20), _face(400 - 8 * 30, 200), _face(500, 400)], 30)
    assert [t.id for t in tracks] == [1, 2, 3]
    for frame in (35, 40, 45):  # face 2 and 3 gone: dropped after max_misses detection rounds
        tracks = tracker.update([_face(10 + 8 * frame, 20)], frame)
    assert [t.id for t in tracks] == [1]


def test_tracker_matches_a_fast_face_by_centre_distance() -> None:
    tracker = IoUTracker()
    tracker.update([_face(0, 0)], 0)
    tracks = tracker.update([_face(45, 0)], 10)  # IoU 0.14 < 0.3 but within one face size
    assert [t.id for t in tracks] == [1]
    tracks = tracker.update([_face(300, 300)], 20)  # far away: a different face
    assert [t.id for t in tracks] == [1, 2]


def test_pipeline_tracks_keep_ids_across_frames(predictor: Predictor, two_faces: Path) -> None:
    ids = []
    with Capture(two_faces) as capture:
        for _, result in LivePipeline(predictor).run(capture):
            ids.append(sorted(f.track_id for f in result.faces))
    assert len(ids) == 40
    assert all(frame_ids == [1, 2] for frame_ids in ids), ids



def test_live_face_sharpness_is_measured_at_one_size_whatever_the_model(predictor: Predictor, two_faces: Path,
                                                                        tmp_path: Path) -> None:
    """A model of another input size reports the faces' sharpness as the bundled model does (faces cut
    at REFERENCE_SIZE, faces/quality.py), not that of its own smaller crop blown up."""
    from deepfake_detection.export.onnx import export_onnx
    from deepfake_detection.models.registry import create_model, default_spec

    spec = default_spec("custom_cnn", input_size=64, crop=predictor.spec.crop)
    small = Predictor.load(export_onnx(create_model("custom_cnn").eval(), spec, tmp_path / "small.onnx"))
    config = LiveConfig(min_detect_every=2, max_detect_every=2, async_detect=False)  # same tracks for both

    def sharpness(model: Predictor) -> tuple[list[tuple[int, int]], list[float]]:
        with Capture(two_faces) as capture:
            faces = [(r.index, f) for _, r in LivePipeline(model, config).run(capture) for f in r.faces]
        return [(i, f.track_id) for i, f in faces], [f.sharpness for _, f in faces]

    (keys, bundled), (small_keys, other) = sharpness(predictor), sharpness(small)
    assert small_keys == keys and len(keys) == 80
    assert other == pytest.approx(bundled, rel=1e-6)

# --- smoothing -------------------------------------------------------------------------------


def test_smoothing_stops_a_flicker() -> None:
    raw = [0.72, 0.86] * 10  # around a 0.8 threshold: a plain threshold flips on every frame
    assert len({p >= 0.8 for p in raw}) == 2
    smoother = Smoother(0.8, window=5, margin=0.05)
    labels = [smoother.label for _ in raw if smoother.update(_) is not None]
    assert set(labels) == {"real"}
    for _ in range(5):  # a sustained change still gets through
        smoother.update(0.95)
    assert smoother.label == "fake"
    smoother.update(0.7)  # one low score does not flip it back
    assert smoother.label == "fake" and smoother.probability == pytest.approx((0.95 * 4 + 0.7) / 5)


def _run_with_scores(predictor: Predictor, clip: Path, scores: list[float], monkeypatch: pytest.MonkeyPatch,
                     config: LiveConfig) -> tuple[list[Any], list[int]]:
    """Run the pipeline with the real model, but report `scores` (cycled) as its outputs."""
    batches: list[int] = []
    predictor = Predictor(predictor.backend, threshold=0.8)
    original = predictor.probabilities
    cycle = iter(scores * 1000)

    def scripted(crops: list[np.ndarray]) -> np.ndarray:
        original(crops)  # the real model still runs
        batches.append(len(crops))
        return np.array([next(cycle) for _ in crops], np.float32)

    monkeypatch.setattr(predictor, "probabilities", scripted)
    with Capture(clip) as capture:
        results = [result for _, result in LivePipeline(predictor, config).run(capture)]
    return results, batches


def test_pipeline_batches_and_rescores_every_m_frames(predictor: Predictor, two_faces: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    results, batches = _run_with_scores(predictor, two_faces, [0.3], monkeypatch,
                                        LiveConfig(rescore_every=3, async_detect=False))
    assert batches[0] == 2  # both new faces of the first frame in one batch
    scored = sum(f.scored for r in results for f in r.faces)
    assert 2 * 40 / 3 - 2 <= scored <= 2 * 40 / 3 + 4  # each track re-scored about every 3rd frame
    assert max(batches) <= 2


def test_pipeline_smoothing_stops_a_flicker(predictor: Predictor, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    clip = moving_face_clip(tmp_path / "one.mp4", np.random.default_rng(5), n=40)
    results, _ = _run_with_scores(predictor, clip, [0.6, 0.99], monkeypatch,
                                  LiveConfig(rescore_every=1, async_detect=False))
    faces = [f for r in results for f in r.faces]
    assert len(faces) == 40 and all(f.scored for f in faces)
    assert {f.raw_probability is not None and f.raw_probability >= 0.8 for f in faces} == {True, False}
    assert {f.label for f in faces} == {"real"}  # raw scores flip every frame, the label holds


# --- capture ---------------------------------------------------------------------------------


class _FakeCap:
    """A stream session that delivers `n` frames filled with `value`, then drops."""

    def __init__(self, n: int, value: int, opened: bool = True) -> None:
        self.n, self.value, self.opened = n, value, opened

    def isOpened(self) -> bool:  # noqa: N802
        return self.opened

    def read(self) -> tuple[bool, Any]:
        time.sleep(0.002)
        if self.n <= 0:
            return False, None
        self.n -= 1
        return True, np.full((24, 32, 3), self.value, np.uint8)

    def get(self, prop: int) -> float:
        return 0.0

    def release(self) -> None:
        pass


def test_dropped_stream_is_reopened_with_backoff() -> None:
    sessions = iter([_FakeCap(5, 1), _FakeCap(0, 0, opened=False), _FakeCap(5, 2)])
    opened_at: list[float] = []

    def opener(source: str | int, kind: str) -> _FakeCap:
        opened_at.append(time.monotonic())
        session = next(sessions, None)
        if session is None:
            raise ConnectionError("server gone")  # from now on every reopen fails
        return session

    capture = Capture("rtsp://camera.local/stream", opener=opener, backoff=0.02, max_backoff=0.08,
                      max_reopens=4)
    assert capture.live and capture.kind == "stream"
    values = [int(frame.image[0, 0, 0]) for frame in capture]
    capture.close()
    assert values[-1] == 2 and 1 in values  # frames from before and after the drop
    assert capture.reopens == 1
    assert capture.error and "could not be reopened" in capture.error
    # initial open, failed reopen, good reopen, then 4 failed tries: waits double up to max_backoff
    assert len(opened_at) == 7
    gaps = np.diff(opened_at)
    assert gaps[0] >= 0.02 and gaps[1] >= 0.04
    assert all(g >= 0.075 for g in gaps[-2:])


def test_stream_that_sends_nothing_backs_off_and_gives_up() -> None:
    """A server that accepts every connection but sends no frame: the waits between reopens keep
    growing (they are not reset by a successful open), and max_reopens ends the capture with an error."""
    opened_at: list[float] = []

    def opener(source: str | int, kind: str) -> _FakeCap:
        opened_at.append(time.monotonic())
        return _FakeCap(0, 0)

    capture = Capture("rtsp://camera.local/stream", opener=opener, backoff=0.02, max_backoff=0.08,
                      max_reopens=4)
    assert capture.read(timeout=5.0) is None
    capture.close()
    assert len(opened_at) == 5  # the first open and 4 reopens, then it gives up
    gaps = np.diff(opened_at)
    assert gaps[0] >= 0.02 and gaps[1] >= 0.04 and gaps[2] >= 0.075 and gaps[3] >= 0.075
    assert capture.error and "could not be reopened" in capture.error


def test_read_after_the_end_returns_none(two_faces: Path) -> None:
    with Capture(two_faces) as capture:
        assert sum(1 for _ in capture) == 40
        done = threading.Event()
        reader = threading.Thread(target=lambda: (capture.read(), done.set()), daemon=True)
        reader.start()
        assert done.wait(2.0), "read() after the end of the file blocked"


def test_webcam_that_does_not_open_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SourceError, match="cannot open webcam 3"):
        Capture("3", opener=lambda source, kind: _FakeCap(0, 0, opened=False))
    assert main(["live", "--source", "9", "--no-display"]) == 1  # the real OpenCV opener, no such camera
    assert "cannot open webcam 9" in capsys.readouterr().err
    assert main(["live", "--source", "missing.mp4", "--no-display"]) == 1
    assert "not found" in capsys.readouterr().err


def test_display_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_run.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert not live_run.display_available()
    monkeypatch.setenv("DISPLAY", ":0")
    assert live_run.display_available()


def test_source_parsing() -> None:
    assert parse_source("0") == 0 and source_kind(0) == "webcam"
    assert source_kind("rtsp://x/y") == source_kind("http://x/y.mjpg") == "stream"
    assert source_kind("clip.mp4") == "file"
    assert source_kind("/dev/video0") == "webcam"  # a V4L2 device path, not a missing file
    opened: list[tuple[str | int, str]] = []

    def opener(source: str | int, kind: str) -> _FakeCap:
        opened.append((source, kind))
        return _FakeCap(0, 0, opened=False)

    with pytest.raises(SourceError, match="cannot open webcam /dev/video7"):
        Capture("/dev/video7", opener=opener)
    assert opened == [("/dev/video7", "webcam")]


def test_file_capture_keeps_every_frame_unless_realtime(two_faces: Path) -> None:
    with Capture(two_faces) as capture:
        indices = []
        for frame in capture:
            time.sleep(0.002)  # a consumer slower than decoding: files still give every frame
            indices.append(frame.index)
    assert indices == list(range(40)) and capture.fps == pytest.approx(25.0)
    with Capture(two_faces, realtime=True) as capture:  # 1.6 s of video, consumer at ~10 fps
        seen = []
        for frame in capture:
            seen.append(frame.index)
            time.sleep(0.1)
    assert capture.dropped > 0 and len(seen) < 40 and seen == sorted(seen) and seen[-1] >= 35


# --- runner and CLI ----------------------------------------------------------------------------


def test_headless_run_writes_every_frame(two_faces: Path, tmp_path: Path) -> None:
    out, lines = tmp_path / "annotated.mp4", tmp_path / "frames.jsonl"
    assert main(["live", "--source", str(two_faces), "--no-display", "--save", str(out),
                 "--jsonl", str(lines)]) == 0
    assert _count_frames(out) == 40
    records = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(40))
    face = records[20]["faces"][0]
    assert set(face) >= FACE_FIELDS | {"track_id", "label"}
    assert face["sharpness"] > 0 and isinstance(face["blurry"], bool)  # of the crop last scored
    # The overlay is in the video: pixels inside the first face's label bar differ from the source.
    src, ann = cv2.VideoCapture(str(two_faces)), cv2.VideoCapture(str(out))
    for _ in range(21):
        _, a = src.read()
        _, b = ann.read()
    x1, y1 = int(face["box"][0]), int(face["box"][1])
    region = (slice(max(y1 - 12, 0), y1 + 2), slice(x1, x1 + 40))
    assert np.abs(a[region].astype(int) - b[region].astype(int)).mean() > 20


def test_bad_output_name_is_a_clear_error(two_faces: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.txt"
    assert main(["live", "--source", str(two_faces), "--no-display", "--save", str(out)]) == 1
    assert "use one of .mp4" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_interrupt_stops_cleanly(predictor: Predictor, two_faces: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    draw = live_run.draw_live

    def draw_then_interrupt(image: np.ndarray, result: Any) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 11:
            raise KeyboardInterrupt
        return draw(image, result)

    monkeypatch.setattr(live_run, "draw_live", draw_then_interrupt)
    out, lines = tmp_path / "cut.mp4", tmp_path / "cut.jsonl"
    summary = run_live(predictor, str(two_faces), display=False, save=str(out), jsonl=str(lines))
    assert summary.stopped_by == "interrupt" and summary.frames == 10
    assert _count_frames(out) == 10  # a complete, playable file
    assert len(lines.read_text().splitlines()) == 10
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert not [t for t in threading.enumerate() if t.name.startswith(("dfd-capture", "dfd-detect"))]


def test_max_frames_and_summary(predictor: Predictor, two_faces: Path) -> None:
    # Detection on the loop's thread, at most every 5 frames: how many detections finish within 15
    # frames then does not depend on the host's load (the threaded detector's count does).
    config = LiveConfig(async_detect=False, max_detect_every=5)
    summary = run_live(predictor, str(two_faces), config=config, display=False, max_frames=15)
    assert summary.frames == 15 and summary.stopped_by == "max-frames" and summary.tracks == 2
    assert summary.detections >= 2 and len(summary.latencies_ms) == 15
    assert {"capture", "track", "crop", "classify", "draw", "pipeline"} <= set(summary.stage_ms)


def test_source_without_a_decodable_frame_publishes_nothing(tmp_path: Path) -> None:
    clip = tmp_path / "empty.mp4"
    clip.write_bytes(b"x")
    out, lines = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    summary = run_live(object(), str(clip), display=False, save=str(out), jsonl=str(lines),  # type: ignore[arg-type]
                       opener=lambda source, kind: _FakeCap(0, 0))
    assert summary.frames == 0 and summary.error == f"no frame could be decoded from {clip}"
    assert summary.stopped_by == "error"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.mp4"]  # no 0-byte video, no temp files


@pytest.mark.parametrize("case", ["unknown", "closed", "q"])
def test_window_close_and_q(case: str, predictor: Predictor, two_faces: Path, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`unknown`: macOS reports the visibility as -1 always (the run must go on to the end);
    `closed`: the window was visible, then closed; `q`: the key stops the run with a playable file."""
    shown: list[int] = []
    monkeypatch.setattr(live_run, "_open_window", lambda: True)
    monkeypatch.setattr(live_run.cv2, "destroyAllWindows", lambda: None)
    monkeypatch.setattr(live_run.cv2, "imshow", lambda name, image: shown.append(1))
    monkeypatch.setattr(live_run.cv2, "waitKey",
                        lambda ms: ord("q") if case == "q" and len(shown) == 5 else -1)
    visibility = {"unknown": lambda: -1.0, "closed": lambda: 1.0 if len(shown) < 7 else 0.0,
                  "q": lambda: 1.0}[case]
    monkeypatch.setattr(live_run.cv2, "getWindowProperty", lambda name, prop: visibility())
    out = tmp_path / "shown.mp4"
    summary = run_live(predictor, str(two_faces), display=True, save=str(out))
    expected = {"unknown": (40, "end"), "closed": (7, "q"), "q": (5, "q")}[case]
    assert (summary.frames, summary.stopped_by) == expected and summary.error is None
    assert _count_frames(out) == expected[0]


def test_bad_output_paths_fail_at_start(two_faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "a_folder.mp4"
    folder.mkdir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for args in (["--save", str(folder)], ["--jsonl", str(folder)], ["--jsonl", str(blocker / "out.jsonl")]):
        assert main(["live", "--source", str(two_faces), "--no-display", *args]) == 1
        err = capsys.readouterr().err
        assert "error: cannot write" in err and "Traceback" not in err and "frames in" not in err, err
    from deepfake_detection.io import atomic

    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(atomic.os, "access", lambda path, mode: Path(path) != locked)  # tests run as root
    assert main(["live", "--source", str(two_faces), "--no-display", "--save", str(locked / "o.mp4")]) == 1
    assert "no permission to write in" in capsys.readouterr().err
    assert list(locked.iterdir()) == [] and list(folder.iterdir()) == []


def test_processing_failure_keeps_the_frames_written(predictor: Predictor, two_faces: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = predictor.detect_faces, {"n": 0}

    class Failing:
        def detect(self, rgb: np.ndarray) -> list[Face]:
            calls["n"] += 1
            if calls["n"] == 5:
                raise RuntimeError("detector crashed")
            return real(rgb)

    predictor = Predictor(predictor.backend, detector=lambda threads: Failing())  # type: ignore[arg-type,return-value]
    out, lines = tmp_path / "part.mp4", tmp_path / "part.jsonl"
    summary = run_live(predictor, str(two_faces), display=False, save=str(out), jsonl=str(lines))
    assert summary.stopped_by == "error" and summary.error is not None
    assert "RuntimeError" in summary.error and "detector crashed" in summary.error
    assert 0 < summary.frames < 40
    assert _count_frames(out) == summary.frames == len(lines.read_text().splitlines())


def test_first_detection_of_each_thread_does_not_set_k(predictor: Predictor, two_faces: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Each thread's detector is slow once (session creation, warm-up): that run must not raise k.
    The detector thread creates and warms its detector before its first real detection."""
    calls: list[tuple[str, bool]] = []  # (thread, blank warm-up image)

    class SlowOnce:
        def __init__(self) -> None:
            self.used = False

        def detect(self, rgb: np.ndarray) -> list[Face]:
            calls.append((threading.current_thread().name, not rgb.any()))
            if not self.used:
                self.used = True
                time.sleep(0.2)
            return []

    predictor = Predictor(predictor.backend, detector=lambda threads: SlowOnce())  # type: ignore[arg-type,return-value]
    calls.clear()  # the predictor's shared detector, made at load, is not the live detector thread's
    pipeline = LivePipeline(predictor)
    with Capture(two_faces) as capture:
        ks = [result.detect_every for _, result in pipeline.run(capture)]
    worker_calls = [blank for name, blank in calls if name.startswith("dfd-detect")]
    assert worker_calls[0] and not any(worker_calls[1:])  # warmed on a blank frame first
    # Had a 200 ms run counted, k would sit at the cap (200 ms / half of a ~2 ms frame) for a dozen
    # detections. The steady no-op detections are not 0 ms: the detector thread can wait up to the
    # GIL switch interval (5 ms) for its turn, which on a busy machine legitimately gives k = 3-5.
    assert pipeline.detections >= 5 and max(ks) < LiveConfig().max_detect_every, ks


def test_unmatched_tracks_hold_still_and_are_not_rescored(predictor: Predictor, two_faces: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = predictor.detect_faces, {"n": 0}

    class Vanishing:  # finds the faces three times, then nothing: as if they had left the frame
        def detect(self, rgb: np.ndarray) -> list[Face]:
            calls["n"] += 1
            return real(rgb) if calls["n"] <= 3 else []

    predictor = Predictor(predictor.backend, detector=lambda threads: Vanishing())  # type: ignore[arg-type,return-value]
    with Capture(two_faces) as capture:
        # k pinned to 2: an adaptive k (from measured detection times) could leave too few
        # detection rounds in the clip for the lost tracks to end, which made this test flaky.
        config = LiveConfig(async_detect=False, min_detect_every=2, max_detect_every=2)
        results = [r for _, r in LivePipeline(predictor, config).run(capture)]
    lost = [f for r in results for f in r.faces if f.lost]
    assert lost and not any(f.scored for f in lost)
    for track_id in {f.track_id for f in lost}:
        mine = [f for f in lost if f.track_id == track_id]
        assert all(f.box == mine[0].box for f in mine)  # held still, not carried on by the old velocity
        assert len({f.fake_probability for f in mine}) == 1  # the last smoothed score, kept
    assert not results[-1].faces  # ended after max_misses detection rounds
    assert {"lost"} <= set(lost[0].to_dict())
