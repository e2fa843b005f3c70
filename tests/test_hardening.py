"""Issue 14: outputs checked before work, odd file names, injection, signals, unreadable paths,
argument checks and messages, for the commands (the service is tests/test_serve_hardening.py)."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_detection.cli import main
from deepfake_detection.io.paths import csv_cell, display_path, json_safe, terminal_text
from deepfake_detection.io.sources import expand_inputs
from dfd_testkit.synthetic import moving_face_clip

READ_ONLY = "/proc/self/dfd-out"  # not writable, not even by root: a real failure, not a mock
ODD = os.fsdecode(b"odd\xff\xfe.jpg")  # not valid UTF-8


def jpeg_file(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="JPEG")
    return path


@pytest.fixture()
def odd_names(tmp_path: Path, astronaut: np.ndarray) -> Path:
    """A folder of images whose names are hostile: not UTF-8, a newline, an escape sequence, a formula."""
    folder = tmp_path / "odd"
    small = np.ascontiguousarray(astronaut[::4, ::4])
    for name in (ODD, "new\nline.jpg", "esc\x1b[31mred.jpg", "=HYPERLINK(1).jpg", "plain.jpg"):
        jpeg_file(folder / name, small)
    return folder


def no_model(*_: object, **__: object) -> None:
    raise AssertionError("work started before the output was checked")


# --- 5. every output target is checked before any work --------------------------------------------

@pytest.mark.parametrize("args", [
    ["detect", "{img}", "-o", "{tmp}"],  # an existing folder
    ["detect", "{img}", "-o", READ_ONLY + "/r.jsonl"],
    ["detect", "{img}", "--annotate", READ_ONLY],
    ["detect", "{img}", "--plot", "{img}"],  # a file where a folder should be
    ["evaluate", "m.onnx", "{tmp}", "--out", "{img}"],  # an existing file
    ["evaluate", "m.onnx", "{tmp}", "--out", READ_ONLY],
    ["prepare", "{tmp}", "--out", READ_ONLY],
    ["scan", "{img}", "-o", READ_ONLY + "/r.parquet"],
])
def test_bad_outputs_fail_before_any_work(args: list[str], tmp_path: Path, astronaut: np.ndarray,
                                          monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
                                          ) -> None:
    img = jpeg_file(tmp_path / "a.jpg", astronaut)
    for target in ("infer.predictor.Predictor.load", "data.prepare.prepare", "evaluate.run.evaluate_model",
                   "scan.inputs.list_inputs"):
        target = f"deepfake_detection.{target}"
        monkeypatch.setattr(target, no_model)
    code = main([a.format(img=img, tmp=tmp_path) for a in args])
    err = capfd.readouterr().err
    assert code == 1, err
    assert "error: cannot" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_dash_means_stdout(tmp_path: Path, astronaut: np.ndarray, tiny_onnx_model: Path,
                           capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    img = jpeg_file(tmp_path / "a.jpg", astronaut)
    assert main(["detect", str(img), "--model", str(tiny_onnx_model), "-o", "-", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["path"] == str(img)
    assert not (tmp_path / "-").exists()


# --- 6 and 15. odd names: nothing lost, nothing injected -------------------------------------------

@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "table"])
def test_odd_file_names_in_every_format(fmt: str, odd_names: Path, tiny_onnx_model: Path,
                                        tmp_path: Path) -> None:
    out = tmp_path / f"out.{fmt}"
    assert main(["detect", str(odd_names), "--model", str(tiny_onnx_model), "--format", fmt, "-o", str(out),
                 "--no-progress"]) == 0
    names = sorted(os.listdir(odd_names))
    if fmt in ("jsonl", "json"):
        text = out.read_text(encoding="utf-8")  # valid UTF-8
        records = [json.loads(line) for line in text.splitlines()] if fmt == "jsonl" else json.loads(text)
        assert sorted(Path(r["path"]).name for r in records) == names  # exact, back to the bytes
        assert all(os.path.exists(r["path"]) for r in records)
    elif fmt == "csv":
        with open(out, newline="", encoding="utf-8", errors="surrogateescape") as handle:
            rows = list(csv.DictReader(handle))
        assert sorted(Path(r["path"]).name for r in rows) == names
        formula = next(r for r in rows if "HYPERLINK" in r["path"])
        assert not formula["path"].startswith(("=", "+", "-", "@"))
    else:
        text = out.read_text(encoding="utf-8")
        assert len(text.splitlines()) == 1 + len(names)  # a newline in a name forges no row
        assert "\x1b" not in text and '"' + str(odd_names) + '/new\\nline.jpg"' in text
        assert "odd\\xff\\xfe.jpg" in text


def test_a_named_formula_is_neutralised_in_csv(tmp_path: Path, astronaut: np.ndarray, tiny_onnx_model: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    jpeg_file(tmp_path / "=1+1.jpg", astronaut)
    model = str(tiny_onnx_model)
    assert main(["detect", "=1+1.jpg", "--model", model, "--format", "csv", "-o", "r.csv"]) == 0
    with open(tmp_path / "r.csv", newline="") as handle:
        assert next(csv.DictReader(handle))["path"] == "'=1+1.jpg"


def test_path_rules() -> None:
    assert terminal_text("plain é.jpg") == "plain é.jpg"
    assert terminal_text("a\nb\x1b[2J\\") == '"a\\nb\\x1b[2J\\\\"'
    assert terminal_text(ODD) == '"odd\\xff\\xfe.jpg"'
    assert json.loads(json_safe(json.dumps(ODD, ensure_ascii=False))) == ODD
    assert display_path(ODD) == "odd\\xff\\xfe.jpg"
    assert [csv_cell(v) for v in ("=1", "+1", "-1", "@x", "\tx", "ok", 0.5)] == [
        "'=1", "'+1", "'-1", "'@x", "'\tx", "ok", 0.5]


def test_scan_rows_keep_odd_names(odd_names: Path, tiny_onnx_model: Path) -> None:
    """The scan's stages, in this process: inputs travel as bytes, the row keeps them exactly."""
    import pyarrow as pa

    from deepfake_detection.scan.inputs import list_inputs
    from deepfake_detection.scan.schema import RESULT_SCHEMA, input_table
    from deepfake_detection.scan.stages import Classifier, detect_batch

    items = list_inputs([str(odd_names)])
    prepared = detect_batch(input_table(items), model=str(tiny_onnx_model), backend="auto", detector="auto",
                            max_pixels=10**8)
    table = Classifier(str(tiny_onnx_model))(prepared).cast(RESULT_SCHEMA)
    odd = [r for r in table.to_pylist() if r["path_bytes"] is not None]
    assert len(odd) == 1 and odd[0]["path_bytes"] == os.fsencode(str(odd_names / ODD))
    assert odd[0]["path"].endswith("odd\\xff\\xfe.jpg") and odd[0]["status"] != "error"
    assert isinstance(table, pa.Table)


# --- 7. SIGTERM stops like Ctrl-C: what was done is published, no temporary is left ------------------

def _wait_for(predicate: object, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


@pytest.mark.slow  # a real process, stopped by a signal
def test_sigterm_publishes_what_detect_scored(tmp_path: Path, astronaut: np.ndarray, tiny_onnx_model: Path
                                              ) -> None:
    for i in range(300):
        jpeg_file(tmp_path / "in" / f"{i:03d}.jpg", astronaut)
    out = tmp_path / "out" / "r.jsonl"
    out.parent.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "deepfake_detection.cli", "detect", str(tmp_path / "in"),
                             "--model", str(tiny_onnx_model), "--format", "jsonl", "-o", str(out),
                             "--no-progress", "--workers", "1"], stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: any(p.stat().st_size > 0 for p in _temporaries(out.parent)))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    lines = out.read_text().splitlines()
    assert 0 < len(lines) < 300 and all(json.loads(line)["status"] for line in lines)
    assert _temporaries(out.parent) == []


@pytest.mark.slow  # a real process, stopped by a signal
def test_sigterm_publishes_what_live_wrote(tmp_path: Path) -> None:
    clip = moving_face_clip(tmp_path / "clip.mp4", np.random.default_rng(0), n=400)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "deepfake_detection.cli", "live", "--source", str(clip),
                             "--no-display", "--jsonl", str(out / "f.jsonl"), "--save", str(out / "v.mp4")],
                            stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: any(p.name.startswith(".f.jsonl") and p.stat().st_size > 0 for p in out.iterdir()))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "stopped by interrupt" in err, err
    assert 0 < len((out / "f.jsonl").read_text().splitlines()) < 400
    assert (out / "v.mp4").stat().st_size > 0 and _temporaries(out) == []


# --- 8. no process outlives a killed parent; stale temporaries go at the next run -------------------

@pytest.mark.slow  # a real process, stopped by a signal
def test_prepare_workers_die_with_a_killed_parent(tmp_path: Path, astronaut: np.ndarray) -> None:
    psutil = pytest.importorskip("psutil")
    small = np.ascontiguousarray(astronaut[::2, ::2])
    for i in range(400):
        jpeg_file(tmp_path / "data" / ("real" if i % 2 else "fake") / f"{i:03d}.jpg", small)
    proc = subprocess.Popen([sys.executable, "-m", "deepfake_detection.cli", "prepare",
                             str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--cropped",
                             "--workers", "2", "--chunk-size", "2",
                             "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "out" / "parts"
    _wait_for(lambda: parts.is_dir() and any(parts.glob("*.parquet")))
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children
    proc.kill()
    proc.wait()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ray_helpers_die_with_a_killed_command() -> None:
    """The watchdog `dfd scan` starts beside a local Ray runtime: once the command is killed, every
    process carrying its mark (the Ray helpers inherit it) is killed too."""
    from deepfake_detection.raywatch import MARK

    command = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    helper = subprocess.Popen(["sleep", "120"], env={**os.environ, MARK: str(command.pid)})
    bystander = subprocess.Popen(["sleep", "120"], env={**os.environ, MARK: "1"})
    watchdog = subprocess.Popen([sys.executable, "-m", "deepfake_detection.raywatch", str(command.pid)])
    try:
        time.sleep(1.0)
        assert helper.poll() is None  # nothing happens while the command lives
        command.kill()
        assert helper.wait(timeout=10) == -signal.SIGKILL
        assert watchdog.wait(timeout=10) == 0
        assert bystander.poll() is None  # another owner's helper is left alone
    finally:
        for proc in (command, helper, bystander, watchdog):
            proc.kill()
            proc.wait()


def test_stale_temporaries_are_removed_at_the_next_run(tmp_path: Path, hide_ray: None) -> None:
    from deepfake_detection.errors import MissingExtraError
    from deepfake_detection.io.atomic import new_temp_file
    from deepfake_detection.scan import scan

    target = tmp_path / "r.parquet"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    stale = tmp_path / f".r.parquet.{dead}.abcd.tmp"
    stale.write_bytes(b"half a file")
    mine = new_temp_file(target)  # a live writer's (this process): kept
    with pytest.raises(MissingExtraError):
        scan([str(tmp_path)], target)
    assert not stale.exists() and mine.exists()


# --- 9. prepare records its settings only once work has started ------------------------------------

def test_a_wrong_source_then_the_corrected_run(tmp_path: Path, astronaut: np.ndarray) -> None:
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    assert main(["prepare", str(tmp_path / "empty"), "--out", str(out), "--cropped", "--no-progress"]) == 1
    assert not (out / "prepare.json").exists()
    for label in ("real", "fake"):
        for i in range(3):
            jpeg_file(tmp_path / "data" / label / f"{i}.jpg", astronaut[::4, ::4].copy())
    assert main(["prepare", str(tmp_path / "data"), "--out", str(out), "--cropped", "--no-progress",
                 "--workers", "1", "--no-dedup"]) == 0


# --- 10 and 14. unreadable, looping and misleading paths -------------------------------------------

def test_links_that_loop_or_break_are_error_records(tmp_path: Path) -> None:
    (tmp_path / "loop.jpg").symlink_to("loop.jpg")
    (tmp_path / "broken.jpg").symlink_to("nowhere.jpg")
    found = expand_inputs([str(tmp_path / "loop.jpg"), str(tmp_path / "broken.jpg")])
    items = {Path(i.path).name: i for i in found}
    assert "link loop" in (items["loop.jpg"].error or "")
    assert "broken symbolic link" in (items["broken.jpg"].error or "")


@pytest.fixture()
def locked_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder that cannot be listed: chmod 000, or, for root (who reads everything), a /proc folder
    the kernel refuses to list without CAP_SYS_ADMIN."""
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir()
        (folder / "hidden.jpg").write_bytes(b"x")
        folder.chmod(0o000)
        yield folder
        folder.chmod(0o755)
        return
    folder = Path("/proc/1/map_files")
    try:
        os.listdir(folder)
    except PermissionError:
        yield folder
        return
    pytest.skip("running as root with every capability: no folder is unreadable")


def test_unreadable_folders_and_files_are_error_records(locked_folder: Path, tmp_path: Path,
                                                        astronaut: np.ndarray, tiny_onnx_model: Path) -> None:
    data = tmp_path / "data"
    jpeg_file(data / "ok.jpg", astronaut[::4, ::4].copy())
    (data / "inside").symlink_to(locked_folder, target_is_directory=True)  # met while walking, named below
    out = tmp_path / "r.jsonl"
    assert main(["detect", str(data), str(locked_folder), str(data / "inside"), "--model",
                 str(tiny_onnx_model), "--format", "jsonl", "-o", str(out)]) == 0
    records = {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert records[str(data / "ok.jpg")]["status"] == "ok"
    for named in (locked_folder, data / "inside"):
        error = records[str(named)]["error"]
        assert "cannot read folder" in error and "Permission denied" in error
    if os.geteuid() != 0:  # a file only root could read
        secret = jpeg_file(data / "secret.jpg", astronaut[::4, ::4].copy())
        secret.chmod(0o000)
        assert main(["detect", str(secret), str(locked_folder / "hidden.jpg"), "--model",
                     str(tiny_onnx_model),
                     "--format", "jsonl", "-o", str(out)]) == 1
        errors = [json.loads(line)["error"] for line in out.read_text().splitlines()]
        assert all("Permission denied" in e for e in errors), errors


def test_messages_say_what_is_wrong(tmp_path: Path, astronaut: np.ndarray,
                                    capfd: pytest.CaptureFixture[str]) -> None:
    from deepfake_detection.errors import UnsupportedFormatError
    from deepfake_detection.io.images import load_image

    for major, compatible, word in ((b"avif", b"mif1", "AVIF"), (b"mif1", b"avif", "AVIF"),
                                    (b"heic", b"mif1", "HEIC"), (b"isom", b"mp41", "MP4")):
        data = b"\x00\x00\x00\x18ftyp" + major + b"\x00\x00\x00\x00" + compatible + b"\x00" * 40
        with pytest.raises(UnsupportedFormatError, match=word):
            load_image(data)
    img = jpeg_file(tmp_path / "image.jpg", astronaut)
    assert main(["detect", str(img), "--model", str(img)]) == 1
    assert "is not a model file" in capfd.readouterr().err
    assert main(["live", "--source", str(tmp_path), "--no-display"]) == 1
    assert "is a folder" in capfd.readouterr().err


# --- 11 and 12. --annotate -----------------------------------------------------------------------

def test_annotate_uses_the_pixel_limit_and_says_it_skips_videos(tmp_path: Path, astronaut: np.ndarray,
                                                                tiny_onnx_model: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capfd: pytest.CaptureFixture[str]) -> None:
    import deepfake_detection.io.images as images

    limits: list[int] = []
    real_load = images.load_image

    def spy(source: object, **kwargs: object) -> np.ndarray:
        limits.append(int(kwargs.get("max_pixels", images.DEFAULT_MAX_PIXELS)))  # type: ignore[call-overload]
        return real_load(source, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(images, "load_image", spy)
    img = jpeg_file(tmp_path / "a.jpg", astronaut)
    clip = moving_face_clip(tmp_path / "clip.mp4", np.random.default_rng(0), n=6)
    assert main(["detect", str(img), str(clip), "--model", str(tiny_onnx_model), "--frames", "2",
                 "--max-pixels", "123456789", "--annotate", str(tmp_path / "ann"),
                 "-o", str(tmp_path / "r")]) == 0
    assert limits == [123456789]  # the annotation decodes with the limit the user raised
    assert (tmp_path / "ann" / "a.jpg").is_file()
    assert "--annotate draws on images only: 1 video" in capfd.readouterr().err


# --- 13. arguments -----------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["detect", "x", "--batch-size", "0"], "--batch-size: must be >= 1"),
    (["detect", "x", "--max-pixels", "0"], "--max-pixels: must be >= 1"),
    (["detect", "x", "--threshold", "1.5"], "must be a probability in [0, 1]"),
    (["scan", "x", "-o", "r.parquet", "--threshold", "-0.1"], "must be a probability"),
    (["live", "--threshold", "nan"], "must be a probability"),
    (["detect", "x", "--frames", "4", "--stride", "2"], "not allowed with argument"),
    (["prepare", "x", "--out", "o", "--frames", "4", "--stride", "2"], "not allowed with argument"),
    (["detect", "x", "--bogus"], "unrecognized arguments: --bogus"),
    (["evaluate", "m", "d", "--out", "o", "--bootstrap", "-1"], "--bootstrap: must be >= 0"),
])
def test_bad_arguments_are_usage_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_paths_after_options_are_inputs_too(tmp_path: Path, astronaut: np.ndarray,
                                            tiny_onnx_model: Path) -> None:
    a, b = jpeg_file(tmp_path / "a.jpg", astronaut), jpeg_file(tmp_path / "b.jpg", astronaut)
    out = tmp_path / "r.jsonl"
    assert main(["detect", str(a), "--model", str(tiny_onnx_model), str(b), "--format", "jsonl",
                 "-o", str(out)]) == 0
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == [str(a), str(b)]


# --- 16. usability -------------------------------------------------------------------------------

def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    for command, default in (("detect", "(default: 32)"), ("prepare", "(default: 640)"),
                             ("evaluate", "(default: 1000)"), ("scan", "(default: 50000000)")):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert default in capsys.readouterr().out.replace("\n", " ").replace("  ", " ")


def test_progress_on_a_terminal_whatever_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    from deepfake_detection.cli import _progress_wanted

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert _progress_wanted(False, 1) and not _progress_wanted(True, 1)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert not _progress_wanted(False, 1) and _progress_wanted(False, 10)


# --- 17. training that went nowhere is said loudly --------------------------------------------------

def test_train_warns_and_strict_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from deepfake_detection.train.checks import run_problems

    assert run_problems({"val_auc": 0.93, "temperature": 1.4}) == []
    assert len(run_problems({"val_auc": 0.35, "temperature": 20.0})) == 2
    assert len(run_problems({"val_auc": float("nan"), "temperature": 0.05})) == 2
    assert "bias -10 hit its bound" in run_problems({"val_auc": 0.93, "temperature": 1.4, "bias": -10.0})[0]
    assert run_problems({"val_auc": 0.93, "temperature": 1.4, "bias": 2.5}) == []
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"val_auc": 0.35, "temperature": 20.0}))
    monkeypatch.setattr("deepfake_detection.train.load_config", lambda *a: object())
    monkeypatch.setattr("deepfake_detection.train.train", lambda *a, **k: run)
    assert main(["train", "--config", "c.yaml"]) == 0
    err = capsys.readouterr().err
    assert "WARNING: validation AUC 0.35 is at or below chance" in err and "hit its bound" in err
    assert main(["train", "--config", "c.yaml", "--strict"]) == 1


# --- 18. scan and videos in folders -------------------------------------------------------------

def test_scan_skips_folder_videos_with_a_count(tmp_path: Path, astronaut: np.ndarray) -> None:
    from deepfake_detection.scan.inputs import list_inputs
    from deepfake_detection.scan.pipeline import ScanSummary

    jpeg_file(tmp_path / "a.jpg", astronaut)
    clip = moving_face_clip(tmp_path / "clip.mp4", np.random.default_rng(0), n=4)
    skipped: list[str] = []
    items = list_inputs([str(tmp_path)], skipped_videos=skipped)
    assert [Path(i.path).name for i in items] == ["a.jpg"] and skipped == [str(clip)]
    assert [Path(i.path).name for i in list_inputs([str(clip)])] == ["clip.mp4"]  # named: its own row
    assert "1 videos skipped" in ScanSummary(output="r.parquet", skipped_videos=1).format()


def test_stdout_table_is_escaped_too(odd_names: Path, tiny_onnx_model: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["detect", str(odd_names), "--model", str(tiny_onnx_model), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and len(out.splitlines()) == 6
    assert isinstance(io.StringIO(out).read(), str)
