"""Atomic file writes: write a temporary file in the target's folder, then os.replace it over the target.

Readers see the old file or the new one, never half of one; on any error the temporary file is removed
and the old target is left as it was. Files get the mode a plain `open(path, "w")` would give them
(0o666 & ~umask), not the 0600 of `tempfile.mkstemp`, so outputs and model files stay shareable.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, TextIO, overload

__all__ = ["atomic_open", "atomic_path", "check_writable", "default_file_mode", "remove_stale_temporaries",
           "write_bytes_atomic", "write_text_atomic"]

StrPath = str | os.PathLike[str]

_UMASK_LOCK = threading.Lock()
_umask: int | None = None


def _read_umask() -> int:
    """The process umask, without changing it where /proc tells it (Linux >= 4.7)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # the only portable way to read it is to set it and put it back
    os.umask(mask)
    return mask


def _process_umask() -> int:
    global _umask
    if _umask is None:
        with _UMASK_LOCK:
            if _umask is None:
                _umask = _read_umask()
    return _umask


def _clear_umask_cache() -> None:
    """Forget the cached umask (for tests that change it)."""
    global _umask
    with _UMASK_LOCK:
        _umask = None


def default_file_mode() -> int:
    """The mode `open(path, "w")` would give a new file: 0o666 & ~umask."""
    return 0o666 & ~_process_umask()


def new_temp_file(target: StrPath, *, suffix: str = ".tmp") -> Path:
    """An empty temporary file next to `target` (same filesystem, so os.replace is atomic); the parent
    folder is created. Its mode is 0600 until `atomic_path` publishes it; the caller removes it on error.
    Its name, `.<target name>.<pid>.<random><suffix>`, says which process writes it (for
    `remove_stale_temporaries`)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    return Path(name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale_temporaries(target: StrPath) -> list[Path]:
    """Remove the temporary files that killed runs (SIGKILL, a power cut) left next to `target`: those
    whose writing process no longer runs on this machine. Returns what was removed."""
    target = Path(target)
    prefix = f".{target.name}."
    removed: list[Path] = []
    try:
        candidates = [p for p in target.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for path in candidates:
        pid_text = path.name[len(prefix):].split(".", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _alive(int(pid_text)):
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            continue
    return removed


def check_writable(target: StrPath) -> None:
    """Raise OutputError unless `target` can be written by `atomic_path`: not a folder, and its nearest
    existing parent is a writable folder (missing folders are created). Call it before long work, so a
    bad output path fails at once instead of after the work is done."""
    from deepfake_detection.errors import OutputError

    target = Path(target)
    if target.is_dir():
        raise OutputError(f"cannot write {target}: it is a folder")
    reason = unwritable_folder(target.parent)
    if reason is not None:
        raise OutputError(f"cannot write {target}: {reason}")


def unwritable_folder(folder: StrPath) -> str | None:
    """Why files cannot be created in `folder` (its nearest existing ancestor, for a folder still to be
    made), or None when they can."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"no permission to write in {existing}"
    return None


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: StrPath, *, suffix: str = ".tmp", fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `target`; write it (by name, with any library), and on a clean
    exit it gets the default file mode and replaces `target`. On any exception it is removed.
    fsync=True flushes the data to disk before the rename makes it visible."""
    target = Path(target)
    tmp = new_temp_file(target, suffix=suffix)
    try:
        yield tmp
        if fsync:
            _fsync_path(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@overload
def atomic_open(target: StrPath, mode: Literal["w", "wt"] = "w", *, encoding: str | None = None,
                newline: str | None = None, suffix: str = ".tmp",
                fsync: bool = False) -> AbstractContextManager[TextIO]: ...


@overload
def atomic_open(target: StrPath, mode: Literal["wb"], *, encoding: None = None, newline: None = None,
                suffix: str = ".tmp", fsync: bool = False) -> AbstractContextManager[BinaryIO]: ...


def atomic_open(target: StrPath, mode: str = "w", *, encoding: str | None = None, newline: str | None = None,
                suffix: str = ".tmp", fsync: bool = False) -> AbstractContextManager[IO[Any]]:
    """`open(target, mode)` that only replaces `target` once the `with` block finished without error.
    mode is "w"/"wt" (text, utf-8 unless `encoding` says otherwise) or "wb"."""
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w', 'wt' or 'wb', not {mode!r}")
    if mode == "wb" and (encoding is not None or newline is not None):
        raise ValueError("binary mode takes no encoding or newline")
    return _atomic_open(target, mode, encoding=encoding, newline=newline, suffix=suffix, fsync=fsync)


@contextmanager
def _atomic_open(target: StrPath, mode: str, *, encoding: str | None, newline: str | None, suffix: str,
                 fsync: bool) -> Iterator[IO[Any]]:
    with atomic_path(target, suffix=suffix) as tmp:
        if mode == "wb":
            handle: IO[Any] = open(tmp, "wb")  # noqa: SIM115 - closed below
        else:
            handle = open(tmp, "w", encoding=encoding or "utf-8", newline=newline)  # noqa: SIM115
        with handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())


def write_text_atomic(target: StrPath, text: str, *, encoding: str = "utf-8", newline: str | None = None,
                      fsync: bool = False) -> Path:
    """Write `text` to `target` atomically; returns `target` as a Path."""
    with atomic_open(target, "w", encoding=encoding, newline=newline, fsync=fsync) as handle:
        handle.write(text)
    return Path(target)


def write_bytes_atomic(target: StrPath, data: bytes, *, fsync: bool = False) -> Path:
    """Write `data` to `target` atomically; returns `target` as a Path."""
    with atomic_open(target, "wb", fsync=fsync) as handle:
        handle.write(data)
    return Path(target)
