"""Video jobs: kept in a small SQLite file so they outlive a page reload and a restart; finished jobs
expire after a time-to-live."""

from __future__ import annotations

import fcntl
import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from deepfake_detection.errors import DFDError

STATES = ("queued", "running", "done", "error")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, filename TEXT, created REAL NOT NULL, finished REAL,
    done INTEGER NOT NULL DEFAULT 0, total INTEGER NOT NULL DEFAULT 0, result TEXT, error TEXT
)"""


class JobsFolderInUse(DFDError):
    """Another service holds the jobs folder."""


class JobStore:
    def __init__(self, folder: Path, ttl: float) -> None:
        self.folder = Path(folder)
        self.uploads = self.folder / "uploads"
        self.ttl = ttl
        try:
            self._open()
        except (OSError, sqlite3.Error) as exc:  # an unwritable --jobs-dir: one line, not a traceback
            reason = getattr(exc, "strerror", None) or str(exc)
            raise DFDError(f"cannot use the jobs folder {self.folder}: {reason}; choose a writable one with "
                           "--jobs-dir DIR (or DFD_JOBS_DIR)") from None

    def _open(self) -> None:
        self.uploads.mkdir(parents=True, exist_ok=True)
        # Start-up fails the jobs of a previous process and deletes its uploads (below): that is only
        # right when no other service uses this folder, so one service holds it at a time. The lock
        # goes with the process, however it ends.
        self._lock_file = (self.folder / "jobs.lock").open("a")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise JobsFolderInUse(f"another dfd serve uses the jobs folder {self.folder}; give this one its "
                                  "own with --jobs-dir DIR (or DFD_JOBS_DIR)") from None
        self._lock = threading.Lock()
        # One connection shared by the event loop and the worker threads, serialised by the lock.
        self._db = sqlite3.connect(self.folder / "jobs.sqlite3", check_same_thread=False,
                                   isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
            # A job a previous process was running cannot resume: its worker and upload are gone.
            self._db.execute("UPDATE jobs SET state='error', finished=?, error=? WHERE state IN ('queued', "
                             "'running')", (time.time(), "the service restarted before this job finished; "
                                            "upload the clip again"))
        for leftover in self.uploads.iterdir():
            leftover.unlink(missing_ok=True)

    def upload_path(self, job_id: str, suffix: str) -> Path:
        return self.uploads / f"{job_id}{suffix}"

    def create(self, filename: str | None) -> str:
        job_id = uuid.uuid4().hex
        with self._lock:
            self._db.execute("INSERT INTO jobs (id, state, filename, created) VALUES (?, 'queued', ?, ?)",
                             (job_id, filename, time.time()))
        return job_id

    def start(self, job_id: str) -> None:
        self._update(job_id, state="running")

    def progress(self, job_id: str, done: int, total: int) -> None:
        self._update(job_id, done=done, total=total)

    def finish(self, job_id: str, result: dict[str, Any], error: str | None = None) -> None:
        self._update(job_id, state="error" if error else "done", result=json.dumps(result), error=error,
                     finished=time.time())

    def fail(self, job_id: str, error: str) -> None:
        self._update(job_id, state="error", error=error, finished=time.time())

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def _update(self, job_id: str, **fields: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in fields)  # names come from this module only
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {columns} WHERE id = ?", (*fields.values(), job_id))  # noqa: S608

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job as the API shows it; None when unknown or expired."""
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or (row["finished"] is not None and row["finished"] + self.ttl < time.time()):
            return None
        return {
            "id": row["id"],
            "state": row["state"],
            "filename": row["filename"],
            "progress": {"done": row["done"], "total": row["total"]},
            "created": row["created"],
            "finished": row["finished"],
            "expires": None if row["finished"] is None else row["finished"] + self.ttl,
            "result": None if row["result"] is None else json.loads(row["result"]),
            "error": row["error"],
        }

    def expire(self) -> int:
        """Delete finished jobs older than the time-to-live; returns how many went."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM jobs WHERE finished IS NOT NULL AND finished < ?",
                                      (time.time() - self.ttl,))
        return cursor.rowcount

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        found = {state: count for state, count in rows}
        return {state: int(found.get(state, 0)) for state in STATES}

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._lock_file.close()  # releases the folder
