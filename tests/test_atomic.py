"""Atomic writes: content and mode on success, old target kept and no temporary left on failure."""

from __future__ import annotations

import os
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from deepfake_detection.io import atomic
from deepfake_detection.io.atomic import atomic_open, atomic_path, write_bytes_atomic, write_text_atomic

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    atomic._clear_umask_cache()
    try:
        yield
    finally:
        os.umask(old)
        atomic._clear_umask_cache()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@posix_only
def test_success_writes_content_with_umask_mode(tmp_path: Path, umask_022: None) -> None:
    assert atomic.default_file_mode() == 0o644
    text = tmp_path / "results.jsonl"
    assert write_text_atomic(text, "{\"a\": 1}\n") == text
    assert text.read_text(encoding="utf-8") == "{\"a\": 1}\n"
    assert _mode(text) == 0o644
    data = tmp_path / "model.bin"
    write_bytes_atomic(data, b"\x00\x01\x02")
    assert data.read_bytes() == b"\x00\x01\x02"
    assert _mode(data) == 0o644
    with atomic_path(tmp_path / "lib.out", suffix=".png") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".png")
        tmp.write_bytes(b"written by a library")  # libraries write by name
    assert (tmp_path / "lib.out").read_bytes() == b"written by a library"
    assert _mode(tmp_path / "lib.out") == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib.out", "model.bin", "results.jsonl"]


@posix_only
def test_mode_follows_a_stricter_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    atomic._clear_umask_cache()
    try:
        write_text_atomic(tmp_path / "private.txt", "x")
        assert _mode(tmp_path / "private.txt") == 0o600
    finally:
        os.umask(old)
        atomic._clear_umask_cache()


def test_umask_read_matches_os_and_leaves_it_unchanged(umask_022: None) -> None:
    assert atomic._read_umask() == 0o022
    assert os.umask(0o022) == 0o022  # still what the fixture set


def test_umask_read_is_thread_safe(umask_022: None) -> None:
    seen: list[int] = []
    threads = [threading.Thread(target=lambda: seen.append(atomic.default_file_mode())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [0o644] * 8


@pytest.mark.parametrize("how", ["text", "binary", "path"])
def test_failure_keeps_old_target_and_removes_temp(tmp_path: Path, how: str) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old content\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="boom"):
        if how == "text":
            with atomic_open(target, "w") as handle:
                handle.write("half a new fi")
                raise RuntimeError("boom")
        elif how == "binary":
            with atomic_open(target, "wb", fsync=True) as bhandle:
                bhandle.write(b"half a new fi")
                raise RuntimeError("boom")
        else:
            with atomic_path(target, fsync=True) as tmp:
                tmp.write_text("half a new fi", encoding="utf-8")
                raise RuntimeError("boom")
    assert target.read_text(encoding="utf-8") == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_failure_without_old_target_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_open(tmp_path / "new.txt") as handle:
        handle.write("partial")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_creates_parent_folder(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c.txt"
    write_text_atomic(target, "héllo\n")
    assert target.read_bytes() == "héllo\n".encode()
    assert [p.name for p in target.parent.iterdir()] == ["c.txt"]


def test_replaces_existing_and_keeps_newline_choice(tmp_path: Path) -> None:
    target = tmp_path / "t.csv"
    target.write_text("old", encoding="utf-8")
    with atomic_open(target, "w", newline="", fsync=True) as handle:
        handle.write("a,b\r\n")
    assert target.read_bytes() == b"a,b\r\n"
    write_text_atomic(target, "x\n", encoding="ascii", newline="\n")
    assert target.read_bytes() == b"x\n"


def test_rejects_non_write_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        atomic_open(tmp_path / "x", "a")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="binary"):
        atomic_open(tmp_path / "x", "wb", encoding="utf-8")  # type: ignore[call-overload]
    assert list(tmp_path.iterdir()) == []


@posix_only
def test_callers_publish_shareable_files(tmp_path: Path, umask_022: None) -> None:
    from deepfake_detection.infer.writers import open_output

    with open_output(str(tmp_path / "results.jsonl")) as stream:
        stream.write("{}\n")
    assert _mode(tmp_path / "results.jsonl") == 0o644
    from deepfake_detection.train.checkpoint import save_checkpoint

    save_checkpoint({"epoch": 1}, tmp_path / "ckpt.pt")
    assert _mode(tmp_path / "ckpt.pt") == 0o644
