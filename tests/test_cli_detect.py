"""`dfd detect` end to end on a folder that mixes good and bad files; the JSONL contract field by field."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from deepfake_detection import load_model, predict_image
from deepfake_detection.cli import main
from deepfake_detection.faces.quality import BLURRY_FACE_SHARPNESS
from deepfake_detection.models.paths import sha256_file

CONTRACT_FIELDS = {"path", "status", "fake_probability", "label", "threshold", "faces", "error", "model",
                   "timings_ms", "warnings"}
FACE_FIELDS = {"box", "detector_score", "fake_probability", "landmarks", "sharpness", "blurry"}


@pytest.fixture()
def mixed_folder(tmp_path: Path, astronaut: np.ndarray, grace_hopper: np.ndarray) -> Path:
    folder = tmp_path / "inputs"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(astronaut).save(folder / "astronaut.jpg", quality=92)
    Image.fromarray(grace_hopper).save(folder / "sub" / "hopper_été.png")
    gradient = np.tile(np.linspace(0, 255, 640, dtype=np.uint8), (480, 1))
    Image.fromarray(np.dstack([gradient] * 3)).save(folder / "no_face.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    good = (folder / "astronaut.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an input: folders keep image files only")
    return folder


def _run_jsonl(args: list[str], out: Path) -> tuple[int, list[dict]]:
    code = main(["detect", *args, "--format", "jsonl", "--output", str(out), "--no-progress"])
    return code, [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_detect_folder_jsonl_contract(mixed_folder: Path, tiny_onnx_model: Path, tmp_path: Path) -> None:
    code, records = _run_jsonl([str(mixed_folder), "--model", str(tiny_onnx_model)], tmp_path / "out.jsonl")
    assert code == 0
    by_name = {Path(r["path"]).name: r for r in records}
    assert set(by_name) == {"astronaut.jpg", "hopper_été.png", "no_face.png", "corrupt.jpg", "truncated.jpg",
                            "empty.png"}
    sha = sha256_file(tiny_onnx_model)
    for record in records:
        assert set(record) >= CONTRACT_FIELDS
        assert record["model"]["sha256"] == sha and record["model"]["name"] == "test-cnn"
        assert record["threshold"] == pytest.approx(0.5)
        assert isinstance(record["timings_ms"], dict)
    for name in ("astronaut.jpg", "hopper_été.png"):
        record = by_name[name]
        assert record["status"] == "ok" and record["error"] is None
        assert len(record["faces"]) >= 1
        for face in record["faces"]:
            assert set(face) == FACE_FIELDS
            x1, y1, x2, y2 = face["box"]
            assert 0 <= x1 < x2 and 0 <= y1 < y2
            assert 0.0 <= face["fake_probability"] <= 1.0
            assert len(face["landmarks"]) == 5
        assert record["fake_probability"] == max(f["fake_probability"] for f in record["faces"])
        assert record["label"] == ("fake" if record["fake_probability"] >= record["threshold"] else "real")
        assert {"decode", "detect", "classify", "total"} <= set(record["timings_ms"])
    astro = by_name["astronaut.jpg"]["faces"][0]["box"]
    assert 150 < (astro[0] + astro[2]) / 2 < 280 and 50 < (astro[1] + astro[3]) / 2 < 180
    nf = by_name["no_face.png"]
    assert nf["status"] == "no_face" and nf["faces"] == [] and nf["fake_probability"] is None
    assert nf["label"] is None
    for name, kind in (("corrupt.jpg", "Error"), ("truncated.jpg", "Error"), ("empty.png", "Empty")):
        record = by_name[name]
        assert record["status"] == "error" and kind in record["error"]
        assert record["fake_probability"] is None and record["label"] is None and record["faces"] == []


def test_detect_exit_codes(tmp_path: Path, tiny_onnx_model: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"GIF89a not really")
    code, records = _run_jsonl([str(bad), str(tmp_path / "missing.png"), "--model", str(tiny_onnx_model)],
                               tmp_path / "o.jsonl")
    assert code == 1 and [r["status"] for r in records] == ["error", "error"]
    with pytest.raises(SystemExit) as usage:
        main(["detect"])
    assert usage.value.code == 2
    assert main(["detect", str(tmp_path / "empty_dir_missing"), "--model", "/nonexistent/model.onnx"]) == 1


def test_detect_csv_and_table(mixed_folder: Path, tiny_onnx_model: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.csv"
    assert main(["detect", str(mixed_folder / "astronaut.jpg"), str(mixed_folder / "empty.png"),
                 "--model", str(tiny_onnx_model), "--format", "csv", "-o", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [r["status"] for r in rows] == ["ok", "error"] and rows[0]["num_faces"] == "1"
    assert rows[0]["warnings"] == ""
    assert main(["detect", str(mixed_folder / "astronaut.jpg"), "--model", str(tiny_onnx_model)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["status", "label", "p(fake)"] and table[1].startswith("ok")
    assert "[the face is blurry" not in table[1]


def test_blurry_faces_are_flagged_in_every_format(astronaut: np.ndarray, tiny_onnx_model: Path,
                                                  tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A face blurrier than the bundled model's training reals mostly are is marked blurry, and its
    file carries a warning: in JSONL, CSV and the table. The sharp original is not."""
    Image.fromarray(astronaut).save(tmp_path / "sharp.png")
    Image.fromarray(cv2.GaussianBlur(astronaut, (0, 0), 3.0)).save(tmp_path / "blurred.png")
    files = [str(tmp_path / "sharp.png"), str(tmp_path / "blurred.png")]
    code, (sharp, blurred) = _run_jsonl([*files, "--model", str(tiny_onnx_model)], tmp_path / "b.jsonl")
    assert code == 0
    assert [f["blurry"] for f in sharp["faces"]] == [False] and sharp["warnings"] == []
    assert [f["blurry"] for f in blurred["faces"]] == [True]
    assert blurred["faces"][0]["sharpness"] < BLURRY_FACE_SHARPNESS < sharp["faces"][0]["sharpness"]
    assert blurred["warnings"] == [
        f"the face is blurry (sharpness under {BLURRY_FACE_SHARPNESS:g}): real faces this blurry are "
        "taken for fakes several times as often (see the model card)"]
    out = tmp_path / "b.csv"
    assert main(["detect", *files, "--model", str(tiny_onnx_model), "--format", "csv", "-o", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert rows[0]["warnings"] == "" and rows[1]["warnings"].startswith("the face is blurry")
    assert json.loads(rows[1]["faces"])[0]["blurry"] is True
    assert main(["detect", *files, "--model", str(tiny_onnx_model)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "[the face is blurry" not in table[1] and "[the face is blurry" in table[2]


def test_glob_and_order(mixed_folder: Path, tiny_onnx_model: Path, tmp_path: Path) -> None:
    code, records = _run_jsonl([str(mixed_folder / "*.png"), "--model", str(tiny_onnx_model)],
                               tmp_path / "g.jsonl")
    assert code == 0
    assert [Path(r["path"]).name for r in records] == ["empty.png", "no_face.png"]


def test_readme_snippet_helpers(astronaut: np.ndarray, tiny_onnx_model: Path) -> None:
    model = load_model(tiny_onnx_model)
    frame = cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR)
    label = predict_image(model, frame)
    assert label in (0, 1)
    expected = model.predict(astronaut)
    assert label == (1 if expected.label == "fake" else 0)
    assert predict_image(model, np.zeros((240, 320, 3), np.uint8)) == 0  # no face: not called fake


def test_predict_many_matches_predict(mixed_folder: Path, tiny_onnx_model: Path) -> None:
    from deepfake_detection.infer.predictor import Predictor

    predictor = Predictor.load(tiny_onnx_model)
    paths = [str(mixed_folder / "astronaut.jpg"), str(mixed_folder / "sub" / "hopper_été.png")]
    many = list(predictor.predict_many(paths, workers=2))
    for path, result in zip(paths, many, strict=True):
        single = predictor.predict(path, path=path)
        assert result.path == path
        assert result.fake_probability == pytest.approx(single.fake_probability, abs=1e-5)


def test_detect_into_a_closed_pipe_stops_quietly(mixed_folder: Path, tiny_onnx_model: Path) -> None:
    # `dfd detect DIR | head -1`: the reader leaves after one line; no traceback, the shell's pipe status.
    originals = list(mixed_folder.glob("*.jpg"))
    for copy in range(3):  # more files to score after the reader has left, so a write meets the closed pipe
        for image in originals:
            (mixed_folder / f"copy{copy}_{image.name}").write_bytes(image.read_bytes())
    proc = subprocess.Popen([sys.executable, "-m", "deepfake_detection.cli", "detect", str(mixed_folder),
                             "--model", str(tiny_onnx_model), "--format", "jsonl"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline()
    proc.stdout.close()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode in (0, 141), stderr.decode()  # 0 when every line fitted in the pipe first
    assert b"Traceback" not in stderr and b"BrokenPipe" not in stderr, stderr.decode()


def test_cli_help_lists_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "deepfake_detection.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "detect" in out and "models" in out


def test_annotate_keeps_same_named_inputs_apart(tmp_path: Path, astronaut: np.ndarray,
                                                grace_hopper: np.ndarray, tiny_onnx_model: Path) -> None:
    for sub, image in (("a", astronaut), ("b", grace_hopper)):
        (tmp_path / "in" / sub).mkdir(parents=True)
        Image.fromarray(image).save(tmp_path / "in" / sub / "face.jpg", quality=95)
    (tmp_path / "in" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    out = tmp_path / "annotated"
    code = main(["detect", str(tmp_path / "in"), "--model", str(tiny_onnx_model), "--annotate", str(out),
                 "--format", "jsonl", "-o", str(tmp_path / "r.jsonl")])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["face.jpg", "face_2.jpg"]  # no overwrite, no error file
    for name, original in (("face.jpg", astronaut), ("face_2.jpg", grace_hopper)):
        drawn = np.asarray(Image.open(out / name).convert("RGB"))
        assert drawn.shape == original.shape
        assert np.abs(drawn.astype(int) - original.astype(int)).max() > 100  # a box and a label were drawn


def test_video_plots_named_apart_and_never_stop_the_batch(tmp_path: Path, tiny_onnx_model: Path,
                                                          caplog: pytest.LogCaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from dfd_testkit.synthetic import moving_face_clip

    for i, sub in enumerate(("a", "b")):
        moving_face_clip(tmp_path / "in" / sub / "clip.mp4", np.random.default_rng(i), n=8)
    plots = tmp_path / "plots"
    args = [str(tmp_path / "in"), "--model", str(tiny_onnx_model), "--frames", "3"]
    code, records = _run_jsonl([*args, "--plot", str(plots)], tmp_path / "r.jsonl")
    assert code == 0 and len(records) == 2
    assert sorted(p.name for p in plots.iterdir()) == ["clip.timeline.png", "clip_2.timeline.png"]
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")  # a plot folder that cannot be: refused before any work
    assert main(["detect", *args, "--plot", str(blocker), "-o", str(tmp_path / "r2.jsonl")]) == 1
    assert not (tmp_path / "r2.jsonl").exists()

    def broken_plot(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("deepfake_detection.infer.render.plot_timeline", broken_plot)
    code, records = _run_jsonl([*args, "--plot", str(plots)], tmp_path / "r3.jsonl")
    assert code == 0 and len(records) == 2  # every plot failed: the results are still all written
    assert caplog.text.count("no timeline plot for") == 2


def test_annotations_mark_blurry_faces(monkeypatch: pytest.MonkeyPatch) -> None:
    from deepfake_detection.infer import render
    from deepfake_detection.infer.results import FaceResult, ImageResult

    texts: list[str] = []
    monkeypatch.setattr(render, "draw_box", lambda out, box, text, colour: texts.append(text))
    faces = [FaceResult([0, 0, 10, 10], 0.9, 0.8, sharpness=5.0), FaceResult([20, 0, 30, 10], 0.9, 0.1,
                                                                            sharpness=500.0)]
    result = ImageResult("x.png", "ok", 0.5, {}, fake_probability=0.8, faces=faces)
    render.draw_result(np.zeros((40, 40, 3), np.uint8), result)
    assert texts == ["fake 0.80 blurry", "real 0.10"]
