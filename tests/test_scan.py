"""`dfd scan` on a local Ray runtime (2 CPUs): same records as `dfd detect`, inputs from listings and
URIs, every input exactly once when a classifier actor dies mid-scan, and the missing-extra message."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepfake_detection.cli import main
from deepfake_detection.faces import Face
from deepfake_detection.infer.predictor import Prepared
from deepfake_detection.scan.inputs import list_inputs, read_uri
from deepfake_detection.scan.schema import read_results
from deepfake_detection.scan.stages import Classifier, decode_prepared, encode_prepared
from dfd_testkit.synthetic import scene, write_image

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_runtime():
    """One small runtime for the module: scan() joins it and leaves it running."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 small scenes: faces in most, a few without; plus an undecodable file."""
    folder = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(0)
    for i in range(40):
        image = scene(rng, (240, 320), face=None if i % 8 == 7 else i, scale=0.45)
        write_image(folder / f"s_{i:02d}.jpg", image)
    return folder


def _detect_jsonl(args: list[str], out: Path) -> list[dict]:
    assert main(["detect", *args, "--format", "jsonl", "-o", str(out), "--no-progress"]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def _same_record(scanned: dict, detected: dict) -> None:
    assert set(scanned) == set(detected) | {"id"}
    for key in ("path", "status", "label", "threshold", "error", "model", "image_size"):
        assert scanned[key] == detected[key], key
    assert scanned["fake_probability"] == pytest.approx(detected["fake_probability"], abs=1e-5)
    assert len(scanned["faces"]) == len(detected["faces"])
    for a, b in zip(scanned["faces"], detected["faces"], strict=True):
        assert set(a) == set(b)
        assert a["box"] == pytest.approx(b["box"], abs=0.2)
        assert a["fake_probability"] == pytest.approx(b["fake_probability"], abs=1e-5)
        assert np.allclose(a["landmarks"], b["landmarks"], atol=0.2)
    assert set(scanned["timings_ms"]) == set(detected["timings_ms"])


@pytest.mark.slow  # a Ray runtime
def test_scan_gives_the_records_of_detect(ray_runtime, scenes: Path, tiny_onnx_model: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    sources = [str(scenes / "s_0*.jpg"), str(bad), str(tmp_path / "missing.png")]
    (tmp_path / "lists").mkdir()
    listing = tmp_path / "lists" / "outside.csv"  # names ../broken.jpg: needs --allow-outside-listing
    listing.write_text("path\n../broken.jpg\n")
    out = tmp_path / "results.parquet"
    assert main(["scan", sources[0], str(listing), sources[2], "-o", str(out), "--no-progress",
                 "--model", str(tiny_onnx_model), "--allow-outside-listing"]) == 0
    summary = capsys.readouterr().out
    detected = _detect_jsonl([*sources, "--model", str(tiny_onnx_model)], tmp_path / "d.jsonl")
    scanned = read_results(out)
    assert [r["id"] for r in scanned] == list(range(12))
    assert [r["path"] for r in scanned] == [r["path"] for r in detected]  # ids follow the listing order
    for s, d in zip(scanned, detected, strict=True):
        _same_record(s, d)
    statuses = [r["status"] for r in scanned]
    assert statuses.count("error") == 2 and statuses.count("no_face") == 1 and statuses.count("ok") == 9
    fakes = sum(r["label"] == "fake" for r in scanned)
    assert "12 images (ok 9, no_face 1, error 2)" in summary
    assert f"fake rate {fakes / 9:.1%} of 9 scored" in summary and "images/s" in summary
    # pandas reads the nested columns as lists of dicts
    df = pd.read_parquet(out)
    ok = df[df["status"] == "ok"].iloc[0]
    face_fields = {"box", "detector_score", "fake_probability", "landmarks", "sharpness", "blurry"}
    assert face_fields == set(ok["faces"][0])
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.slow  # a Ray runtime
def test_a_killed_actor_loses_and_duplicates_nothing(ray_runtime, scenes: Path, tiny_onnx_model: Path,
                                                     tmp_path: Path) -> None:
    from deepfake_detection.scan import ScanConfig, scan

    marker = str(tmp_path / "killed")

    class DiesOnce(Classifier):  # a local class: Ray pickles it by value (tests are not importable there)
        """Kills its own process on the first batch holding input 20, once (the marker file remembers)."""

        def __call__(self, batch):
            if 20 in batch["id"].to_pylist() and not os.path.exists(marker):
                Path(marker).write_text(str(os.getpid()))
                os._exit(1)
            return super().__call__(batch)

    import logging

    from ray.data import DataContext

    out = tmp_path / "r.parquet"
    config = ScanConfig(model=str(tiny_onnx_model), batch_size=4, images_per_task=8, progress=False)
    context, data_log = DataContext.get_current(), logging.getLogger("ray.data")
    bars, level = context.enable_progress_bars, data_log.level
    summary = scan([str(scenes)], out, config, classifier=DiesOnce)
    assert (context.enable_progress_bars, data_log.level) == (bars, level)  # process-wide state restored
    assert os.path.exists(marker)  # the actor did die mid-scan
    ids = pd.read_parquet(out, columns=["id"])["id"].tolist()
    assert len(ids) == 40 and sorted(ids) == list(range(40))
    assert summary.total == 40 and summary.counts["error"] == 0


def test_listings_and_uris(scenes: Path, tmp_path: Path) -> None:
    listing = tmp_path / "list.csv"
    pd.DataFrame({"label": [0, 1, 0], "path": ["a.jpg", str(scenes / "s_01.jpg"),
                                                (scenes / "s_02.jpg").as_uri()]}).to_csv(listing, index=False)
    parquet = tmp_path / "list.parquet"
    pd.DataFrame({"uri": [(scenes / "s_03.jpg").as_uri(), str(scenes / "s_01.jpg")]}).to_parquet(parquet)
    prefix = scenes.as_uri()
    paths = [i.path for i in list_inputs([str(listing), str(parquet), prefix], allow_outside_listing=True)]
    assert paths[:4] == [str(tmp_path / "a.jpg"), str(scenes / "s_01.jpg"), (scenes / "s_02.jpg").as_uri(),
                         (scenes / "s_03.jpg").as_uri()]  # relative to the listing; duplicates once
    assert len(paths) == 4 + 38 and paths[4] == (scenes / "s_00.jpg").as_uri()  # the prefix, sorted
    assert read_uri(paths[2], 10**7) == (scenes / "s_02.jpg").read_bytes()
    from deepfake_detection.errors import DFDError, ImageError

    with pytest.raises(ImageError, match="over the limit"):
        read_uri(paths[2], 100)
    with pytest.raises(ImageError, match="no such object"):
        read_uri((tmp_path / "nope.jpg").as_uri(), 100)
    (tmp_path / "cols.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DFDError, match="no 'path' or 'uri' column"):
        list_inputs([str(tmp_path / "cols.csv")])


@pytest.mark.slow  # a Ray runtime
def test_a_batch_that_always_kills_its_actor_fails_the_scan(ray_runtime, scenes: Path, tiny_onnx_model: Path,
                                                            tmp_path: Path) -> None:
    from deepfake_detection.errors import DFDError
    from deepfake_detection.scan import ScanConfig, scan

    class AlwaysDies(Classifier):  # Ray Data's default would restart and retry it forever
        def __call__(self, batch):
            if 20 in batch["id"].to_pylist():
                os._exit(1)
            return super().__call__(batch)

    out = tmp_path / "r.parquet"
    config = ScanConfig(model=str(tiny_onnx_model), batch_size=4, images_per_task=8, progress=False,
                        max_retries=1)
    with pytest.raises(DFDError, match="the scan failed .*retried 1 times.*left as it was"):
        scan([str(scenes)], out, config, classifier=AlwaysDies)
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_csv_listings_without_header_or_type_guessing(tmp_path: Path) -> None:
    from deepfake_detection.errors import DFDError

    def paths(text: str) -> list[str]:
        (tmp_path / "l.csv").write_text(text)
        return [os.path.relpath(i.path, tmp_path) for i in list_inputs([str(tmp_path / "l.csv")])]

    assert paths("a.jpg\nb.jpg\nc.jpg\n") == ["a.jpg", "b.jpg", "c.jpg"]  # no header: the first row counts
    assert paths("007\n008.jpg\n1e3\n") == ["007", "008.jpg", "1e3"]  # names kept verbatim
    assert paths("label,path\n1,007\n0,0010.jpg\n") == ["007", "0010.jpg"]
    assert paths("uri\n00.png\n") == ["00.png"] and paths("") == []
    with pytest.raises(DFDError, match="no 'path' or 'uri' column"):
        paths("a.jpg,1\nb.jpg,0\n")


def test_listing_entries_stay_in_its_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from deepfake_detection.errors import DFDError

    folder = tmp_path / "lists"
    folder.mkdir()
    listing = folder / "l.csv"
    listing.write_text("path\nsub/a.jpg\n./b.jpg\nsub/../c.jpg\ns3://bucket/d.jpg\n")
    assert [i.path for i in list_inputs([str(listing)])] == [
        str(folder / "sub" / "a.jpg"), str(folder / "b.jpg"), str(folder / "c.jpg"), "s3://bucket/d.jpg"]
    above = str(tmp_path / "x.jpg")
    for entry, allowed in (("../x.jpg", above), ("sub/../../x.jpg", above), ("/etc/passwd", "/etc/passwd"),
                           ("file:///etc/passwd", "file:///etc/passwd")):
        listing.write_text(f"path\nb.jpg\n{entry}\n")
        with pytest.raises(DFDError, match=r"1 entries are not inside its folder .*--allow-outside-listing"):
            list_inputs([str(listing)])
        assert list_inputs([str(listing)], allow_outside_listing=True)[1].path == allowed
    pd.DataFrame({"path": ["../x.jpg"]}).to_parquet(folder / "l.parquet")
    with pytest.raises(DFDError, match="not inside its folder"):
        list_inputs([str(folder / "l.parquet")])
    # on the command line: a message before Ray starts, no traceback, no output
    assert main(["scan", str(folder / "l.parquet"), "-o", str(tmp_path / "r.parquet")]) == 1
    err = capsys.readouterr().err
    assert "--allow-outside-listing" in err and "Traceback" not in err
    assert not (tmp_path / "r.parquet").exists()


def test_the_id_check_finds_duplicates_and_gaps() -> None:
    from deepfake_detection.errors import DFDError
    from deepfake_detection.scan.pipeline import IdCheck

    check = IdCheck(5)
    check.add(np.array([3, 0]))
    check.add(np.array([1, 2, 4]))
    check.finish()  # each id once
    for batches, message in ((([0, 1], [1, 2]), "input id 1 twice"), (([0, 0, 1],), "input id 0 twice"),
                             (([0, 1], [5]), "unknown input id"), (([0, 1], [-1]), "unknown input id")):
        check = IdCheck(5)
        with pytest.raises(DFDError, match=message):
            for ids in batches:
                check.add(np.array(ids))
    check = IdCheck(5)
    check.add(np.array([0, 1, 3]))  # as many rows as inputs would not be enough: 2 and 4 are missing
    with pytest.raises(DFDError, match="no row for 2 inputs \\(first id 2\\)"):
        check.finish()


def test_block_count_is_capped() -> None:
    from deepfake_detection.scan.pipeline import MAX_BLOCKS_PER_CPU, _block_rows

    assert _block_rows(40, 16, 2) == 16 and _block_rows(1, 16, 2) == 16
    rows = _block_rows(10_000_000, 16, 8)
    assert -(-10_000_000 // rows) == MAX_BLOCKS_PER_CPU * 8  # 1,600 blocks in the driver, not 625k


def test_a_local_session_ignores_ray_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """RAY_ADDRESS (or a `ray start` on this machine) must not turn a local session into joining a
    cluster, where Ray refuses num_cpus; a failed start shuts down what it started."""
    from deepfake_detection.errors import DFDError
    from deepfake_detection.raycluster import ray_session

    calls: list = []
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    with ray_session(None, num_cpus=2):
        pass
    assert calls[0]["address"] == "local" and calls[0]["num_cpus"] == 2 and calls[1:] == ["shutdown"]

    def half_start(**kwargs):
        calls.append(kwargs)
        raise RuntimeError("raylet died")

    calls.clear()
    monkeypatch.setattr(ray, "init", half_start)
    with pytest.raises(DFDError, match="cannot start or join a local Ray runtime: raylet died"), \
            ray_session("local"):
        pass
    assert calls[0]["address"] == "local" and calls[1:] == ["shutdown"]


def test_prepared_images_cross_the_stage_boundary_intact() -> None:
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(2)]
    faces = [Face(np.array([1.5, 2, 30, 40], np.float32), 0.91, rng.random((5, 2)).astype(np.float32)),
             Face(np.array([5, 6, 7, 8], np.float32), 0.5, None)]
    p = Prepared("x.jpg", faces=faces, crops=crops, sharpness=[12.5, 80.0], image_size=(64, 48),
                 timings_ms={"decode": 1.25})
    q = decode_prepared(encode_prepared(7, p), 8)
    assert q.path == "x.jpg" and q.image_size == (64, 48) and q.timings_ms == {"decode": 1.25}
    assert q.sharpness == [12.5, 80.0]
    assert all(np.array_equal(a, b) for a, b in zip(q.crops, crops, strict=True))
    assert np.array_equal(q.faces[0].box, faces[0].box) and np.array_equal(q.faces[0].landmarks,
                                                                            faces[0].landmarks)
    assert q.faces[1].landmarks is None
    r = decode_prepared(encode_prepared(8, Prepared("y.png", image_size=(8, 8))), 8)
    assert r.faces == [] and r.crops == [] and r.image_size == (8, 8)
    e = decode_prepared(encode_prepared(9, Prepared("z", error="ImageError: bad")), 8)
    assert e.error == "ImageError: bad" and e.image_size is None


def test_without_ray_scan_says_how_to_install(scenes: Path, hide_ray: None, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", str(scenes), "-o", str(tmp_path / "r.parquet")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'deepfake-detection[distributed]'" in err and "Traceback" not in err
    assert not (tmp_path / "r.parquet").exists()


def test_classifier_pool_follows_the_cluster() -> None:
    from deepfake_detection.scan import ScanConfig, ScanSummary
    from deepfake_detection.scan.pipeline import _actors

    small = _actors(ScanConfig(), {"CPU": 2.0})
    assert small == {"concurrency": 1, "num_gpus": 0, "num_cpus": 0.0, "device": "cpu", "threads": 1}
    big = _actors(ScanConfig(), {"CPU": 32.0})
    assert (big["concurrency"], big["num_cpus"], big["device"]) == (11, 1.0, "cpu")
    gpus = _actors(ScanConfig(), {"CPU": 32.0, "GPU": 4.0})
    assert (gpus["concurrency"], gpus["num_gpus"], gpus["device"]) == (4, 1, "cuda")
    assert _actors(ScanConfig(), {"CPU": 32.0, "GPU": 4.0}, torch_weights=False)["device"] == "cpu"
    mine = _actors(ScanConfig(classifiers=3, classifier_cpus=2), {"CPU": 2.0})
    assert (mine["concurrency"], mine["num_cpus"], mine["threads"]) == (3, 2, 2)
    empty = ScanSummary(output="x.parquet")
    assert empty.fake_rate is None and empty.images_per_second == 0.0 and "fake rate n/a" in empty.format()


def test_an_unreachable_cluster_fails_fast() -> None:
    import socket

    from deepfake_detection.errors import DFDError
    from deepfake_detection.raycluster import _check_reachable

    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(DFDError, match="cannot reach the Ray cluster"):
            _check_reachable(address, timeout=2)
    _check_reachable("auto")  # left to Ray
    try:
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        return  # no IPv6 here
    with listener:
        _check_reachable(f"[::1]:{listener.getsockname()[1]}", timeout=2)  # brackets are not the host


def test_stages_in_process_with_a_threshold_override(scenes: Path, tiny_onnx_model: Path) -> None:
    import pyarrow as pa

    from deepfake_detection.scan.stages import detect_batch

    inputs = pa.table({"id": [5, 6], "path": [str(scenes / "s_00.jpg"), "gone.jpg"],
                       "missing": [False, True]})
    prepared = detect_batch(inputs, model=str(tiny_onnx_model), backend="auto", detector="auto",
                            max_pixels=10**8)
    rows = Classifier(str(tiny_onnx_model), threshold=0.0)(prepared).to_pylist()
    assert [r["id"] for r in rows] == [5, 6]
    assert rows[0]["status"] == "ok" and rows[0]["threshold"] == 0.0 and rows[0]["label"] == "fake"
    assert rows[1]["status"] == "error" and rows[1]["error"].startswith("FileNotFoundError")
