"""A watchdog for the local Ray runtime a `dfd` command starts: when the command dies, even by
SIGKILL (which it cannot catch), the Ray helper processes it started (GCS, raylet, agents, workers)
are killed at once instead of lingering for a minute or more.

The command marks its environment with DFD_RAY_OWNER=<its pid> before starting Ray; every helper
inherits it. This process polls the command's pid and, once it is gone, kills every process of this
user that carries the mark. Run as `python -m deepfake_detection.raywatch PID`.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

MARK = "DFD_RAY_OWNER"


def _alive(pid: int) -> bool:
    """Running: not gone, and not a zombie (dead, waiting for its parent to collect it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def marked_processes(owner: int) -> list[int]:
    """Pids whose environment carries DFD_RAY_OWNER=owner (readable ones: this user's)."""
    needle = f"{MARK}={owner}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def kill_marked(owner: int, rounds: int = 3) -> int:
    """SIGKILL the marked processes, a few rounds (one may start another while we kill)."""
    killed = 0
    for _ in range(rounds):
        pids = marked_processes(owner)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        time.sleep(0.2)
    return killed


def main(argv: list[str]) -> int:
    owner = int(argv[1])
    while _alive(owner):
        time.sleep(0.5)
    kill_marked(owner)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
