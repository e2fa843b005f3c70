"""Dataset layouts, parsed from small generated trees of empty files (no real data)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from deepfake_detection.data.layouts import available_layouts, iter_sources, make_layout, resolve_layout
from deepfake_detection.data.types import SourceItem
from deepfake_detection.errors import DatasetError


def touch(root: Path, *rels: str) -> None:
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


Failures = list[tuple[str, str]]


def collect(root: Path, layout: str = "auto", **options: object) -> tuple[list[SourceItem], Failures]:
    failures: Failures = []
    opts = {layout: options} if options else None
    items = list(iter_sources([root], layout, options=opts, on_failure=lambda w, y: failures.append((w, y))))
    return items, failures


def by_name(items: list[SourceItem]) -> dict[str, SourceItem]:
    return {Path(i.path).name: i for i in items}


# ---------------------------------------------------------------- folders


def test_folders_labels_groups_and_order(tmp_path: Path) -> None:
    touch(tmp_path, "real/abc.jpg", "real/sub/x.PNG", "real/clip.mp4", "real/notes.txt", "real/.hidden.jpg",
          "Fake/abc.png", "deepfake/y.webp", "deepfake/clip.mp4", "deepfake/faceswap/z.jpg")
    assert resolve_layout(tmp_path).name == "folders"
    items, failures = collect(tmp_path)
    assert not failures
    paths = [i.path for i in items]
    assert len(items) == 7 and len(set(paths)) == 7
    assert [i.path for i in collect(tmp_path)[0]] == paths  # deterministic
    got = {Path(i.path).relative_to(tmp_path.resolve()).as_posix(): i for i in items}
    assert got["real/abc.jpg"].label == 0 and got["real/abc.jpg"].method == "real"
    assert got["Fake/abc.png"].label == 1 and got["Fake/abc.png"].method == "unknown"
    # a fake made from a real with the same name shares its group; videos group by stem
    assert got["real/abc.jpg"].group == got["Fake/abc.png"].group
    assert got["real/clip.mp4"].group == got["deepfake/clip.mp4"].group == "folder:clip"
    assert got["real/clip.mp4"].kind == "video" and got["real/sub/x.PNG"].kind == "image"
    assert got["real/sub/x.PNG"].group == "folder:sub/x"
    assert got["deepfake/faceswap/z.jpg"].method == "unknown"
    assert all(i.dataset == "folder" and Path(i.path).is_absolute() for i in items)


def test_folders_method_from_subfolder_and_groups_csv(tmp_path: Path) -> None:
    touch(tmp_path, "real/a.jpg", "real/b.jpg", "deepfake/faceswap/a.jpg", "deepfake/loose.jpg")
    (tmp_path / "groups.csv").write_text("path,group\nreal/a.jpg,alice\nreal/b.jpg,alice\n")
    items, _ = collect(tmp_path, "folders", method_from_subfolder=True)
    got = {Path(i.path).relative_to(tmp_path.resolve()).as_posix(): i for i in items}
    assert got["deepfake/faceswap/a.jpg"].method == "faceswap"
    assert got["deepfake/loose.jpg"].method == "unknown"
    assert got["real/a.jpg"].group == got["real/b.jpg"].group == "folder:alice"
    assert got["deepfake/faceswap/a.jpg"].group == "folder:a"


def test_folders_refuses_symlink_outside(tmp_path: Path) -> None:
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"")
    root = tmp_path / "ds"
    touch(root, "real/ok.jpg")
    os.symlink(outside, root / "real" / "link.jpg")
    items, failures = collect(root)
    assert [Path(i.path).name for i in items] == ["ok.jpg"]
    assert len(failures) == 1 and "outside" in failures[0][1]


# ---------------------------------------------------------------- FaceForensics++


def make_ffpp(root: Path) -> None:
    for comp in ("c23", "c40"):
        originals = f"original_sequences/youtube/{comp}/videos"
        touch(root, *(f"{originals}/{i}.mp4" for i in ("000", "001", "003", "004")))
        touch(root, f"original_sequences/actors/{comp}/videos/01__walking.mp4",
              f"original_sequences/actors/{comp}/videos/02__talking.mp4",
              f"original_sequences/actors/{comp}/videos/05__talking.mp4")
        for method in ("Deepfakes", "FaceSwap"):
            fakes = f"manipulated_sequences/{method}/{comp}/videos"
            touch(root, *(f"{fakes}/{n}.mp4" for n in ("000_003", "003_000")))
        touch(root, f"manipulated_sequences/DeepFakeDetection/{comp}/videos/01_02__walking__ABCD1234.mp4")
    touch(root, "manipulated_sequences/Deepfakes/c23/masks/videos/000_003.mp4",
          "manipulated_sequences/Deepfakes/c23/videos/bogus.mp4")
    (root / "splits").mkdir()
    (root / "splits" / "train.json").write_text(json.dumps([["000", "003"]]))
    (root / "splits" / "test.json").write_text(json.dumps([["001", "004"]]))


def test_ffpp_groups_methods_splits(tmp_path: Path) -> None:
    make_ffpp(tmp_path)
    assert resolve_layout(tmp_path).name == "ffpp"
    items, failures = collect(tmp_path)
    assert len(failures) == 1 and failures[0][0].endswith("bogus.mp4")
    assert {i.source_id.split("/")[0] for i in items} == {"ffpp:c23"}  # c23 preferred by default
    got = {i.source_id.removeprefix("ffpp:c23/"): i for i in items}
    assert len(got) == len(items) == 4 + 3 + 4 + 1
    one = {got[k].group for k in ("youtube/000", "youtube/003", "Deepfakes/000_003", "Deepfakes/003_000",
                                  "FaceSwap/000_003", "FaceSwap/003_000")}
    assert one == {"ffpp:000"}
    assert got["youtube/001"].group == "ffpp:001" != got["youtube/004"].group  # 001 and 004 never paired
    assert got["Deepfakes/000_003"].method == "Deepfakes" and got["Deepfakes/000_003"].label == 1
    assert got["youtube/000"].method == "real" and got["youtube/000"].label == 0
    # actors: 01 and 02 linked by the DeepFakeDetection clip, 05 alone
    assert got["actors/01__walking"].group == got["actors/02__talking"].group == "ffpp:actor01"
    assert got["DeepFakeDetection/01_02__walking__ABCD1234"].group == "ffpp:actor01"
    assert got["actors/05__talking"].group == "ffpp:actor05"
    assert got["youtube/000"].official_split == "train" and got["FaceSwap/003_000"].official_split == "train"
    assert got["youtube/004"].official_split == "test"
    assert got["actors/01__walking"].official_split is None
    assert [i.source_id for i in collect(tmp_path)[0]] == [i.source_id for i in items]


def test_ffpp_compression_option(tmp_path: Path) -> None:
    make_ffpp(tmp_path)
    all_items, _ = collect(tmp_path, "ffpp", compression="all")
    assert len(all_items) == 24 and {i.source_id.split("/")[0] for i in all_items} == {"ffpp:c23", "ffpp:c40"}
    # the same identity in two compressions stays one group
    assert len({i.group for i in all_items if i.source_id.endswith(("/000", "/003_000"))}) == 1
    c40, _ = collect(tmp_path, "ffpp", compression="c40")
    assert len(c40) == 12 and all(i.source_id.startswith("ffpp:c40/") for i in c40)


# ---------------------------------------------------------------- DFDC


def test_dfdc_groups_across_parts(tmp_path: Path) -> None:
    p0, p1 = tmp_path / "dfdc_train_part_0", tmp_path / "dfdc_train_part_1"
    touch(p0, "aaa.mp4", "bbb.mp4", "ccc.mp4", "stray.mp4")
    touch(p1, "ddd.mp4", "eee.mp4")
    (p0 / "metadata.json").write_text(json.dumps({
        "aaa.mp4": {"label": "REAL", "split": "train", "original": None},
        "bbb.mp4": {"label": "FAKE", "split": "train", "original": "aaa.mp4"},
        "ccc.mp4": {"label": "FAKE", "split": "train", "original": "eee.mp4"},
        "missing.mp4": {"label": "FAKE", "split": "train", "original": "aaa.mp4"},
        "../evil.mp4": {"label": "FAKE", "split": "train", "original": None},
    }))
    (p1 / "metadata.json").write_text(json.dumps({
        "ddd.mp4": {"label": "FAKE", "split": "train", "original": "eee.mp4"},
        "eee.mp4": {"label": "REAL", "split": "train", "original": None},
    }))
    assert resolve_layout(tmp_path).name == "dfdc"
    items, failures = collect(tmp_path)
    got = by_name(items)
    assert sorted(got) == ["aaa.mp4", "bbb.mp4", "ccc.mp4", "ddd.mp4", "eee.mp4"]
    assert got["aaa.mp4"].group == got["bbb.mp4"].group == "dfdc:aaa"
    assert got["ccc.mp4"].group == got["ddd.mp4"].group == got["eee.mp4"].group == "dfdc:ccc"
    assert got["bbb.mp4"].method == "dfdc" and got["aaa.mp4"].method == "real" and got["aaa.mp4"].label == 0
    assert all(i.official_split is None for i in items)  # "train" everywhere is no split
    reasons = " | ".join(y for _, y in failures)
    assert "missing" in reasons and "not listed" in reasons and "plain file name" in reasons
    assert resolve_layout(p1).name == "dfdc"  # a single part works too


# ---------------------------------------------------------------- Celeb-DF


def test_celebdf_groups_and_test_list(tmp_path: Path) -> None:
    touch(tmp_path, "Celeb-real/id0_0000.mp4", "Celeb-real/id1_0001.mp4", "Celeb-real/id2_0000.mp4",
          "Celeb-synthesis/id0_id1_0000.mp4", "Celeb-synthesis/id2_id3_0003.mp4",
          "YouTube-real/00000.mp4", "YouTube-real/00001.mp4", "Celeb-synthesis/weird.mp4")
    (tmp_path / "List_of_testing_videos.txt").write_text(
        "1 YouTube-real/00000.mp4\n0 Celeb-synthesis/id2_id3_0003.mp4\n1 Celeb-real/id2_0000.mp4\n")
    assert resolve_layout(tmp_path).name == "celebdf"
    items, failures = collect(tmp_path)
    assert len(failures) == 1 and failures[0][0].endswith("weird.mp4")
    got = by_name(items)
    assert {got[n].group for n in ("id0_0000.mp4", "id1_0001.mp4", "id0_id1_0000.mp4")} == {"celebdf:id0"}
    assert got["id2_0000.mp4"].group == got["id2_id3_0003.mp4"].group == "celebdf:id2"
    assert got["00000.mp4"].group == "celebdf:yt:00000" != got["00001.mp4"].group
    assert got["id0_id1_0000.mp4"].label == 1 and got["id0_id1_0000.mp4"].method == "celebdf"
    assert got["00000.mp4"].label == 0 and got["00000.mp4"].official_split == "test"
    assert got["id2_id3_0003.mp4"].official_split == "test" and got["id0_0000.mp4"].official_split == "train"


# ---------------------------------------------------------------- CSV


def test_csv_rows_labels_and_groups(tmp_path: Path) -> None:
    touch(tmp_path, "imgs/a.jpg", "imgs/b.jpg", "imgs/c.jpg", "vid/v.mp4", "imgs/doc.txt")
    listing = tmp_path / "list.csv"
    listing.write_text("path,label,group,method\n"
                       "imgs/a.jpg,real,alice,\n"
                       "imgs/b.jpg,1,alice,faceswap\n"
                       "imgs/c.jpg,Deepfake,,\n"
                       "vid/v.mp4,0,,\n"
                       "imgs/nope.jpg,0,,\n"
                       "imgs/doc.txt,0,,\n"
                       "imgs/a.jpg,maybe,,\n")
    assert resolve_layout(listing).name == "csv"
    items, failures = collect(listing)
    assert [Path(i.path).name for i in items] == ["a.jpg", "b.jpg", "c.jpg", "v.mp4"]  # file order
    a, b, c, v = items
    assert [(x.label, x.method) for x in (a, b, c)] == [(0, "real"), (1, "faceswap"), (1, "unknown")]
    assert a.group == b.group == "csv:alice" and c.group == "csv:imgs/c" and v.kind == "video"
    assert len(failures) == 3 and all(w.startswith(str(listing)) for w, _ in failures)


def test_csv_refuses_path_tricks(tmp_path: Path) -> None:
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"")
    ds = tmp_path / "ds"
    touch(ds, "ok.jpg")
    os.symlink(secret, ds / "link.jpg")
    listing = ds / "list.csv"
    listing.write_text(f"path,label\nok.jpg,0\n../secret.jpg,0\nsub/../../secret.jpg,1\n{secret},0\nlink.jpg,0\n")
    items, failures = collect(listing)
    assert [Path(i.path).name for i in items] == ["ok.jpg"]
    assert len(failures) == 4
    allowed, _ = collect(listing, "csv", allow_absolute=True)
    assert len(allowed) == 2  # ok.jpg and the secret (reached by several rows, yielded once)


def test_csv_without_header_is_an_error(tmp_path: Path) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text("a.jpg,0\n")
    with pytest.raises(DatasetError, match="path,label"):
        collect(listing)


# ---------------------------------------------------------------- registry


def test_unrecognised_layout_lists_supported(tmp_path: Path) -> None:
    touch(tmp_path, "random/file.jpg")
    with pytest.raises(DatasetError) as e:
        resolve_layout(tmp_path)
    for name in ("ffpp", "dfdc", "celebdf", "csv", "folders"):
        assert name in str(e.value)
    assert list(available_layouts())[0] == "ffpp" and list(available_layouts())[-1] == "folders"
    with pytest.raises(DatasetError, match="unknown dataset layout"):
        make_layout("nope")
    with pytest.raises(DatasetError, match="does not look like"):
        resolve_layout(tmp_path, "ffpp")


def test_iter_sources_several_roots_unique_ids(tmp_path: Path) -> None:
    touch(tmp_path, "one/ds/real/a.jpg", "two/ds/real/a.jpg")
    items = list(iter_sources([tmp_path / "one" / "ds", tmp_path / "two" / "ds", tmp_path / "one" / "ds"]))
    assert len(items) == 2  # the repeated root adds nothing
    assert len({i.source_id for i in items}) == 2
