"""Signals: SIGTERM stops a command like Ctrl-C, and worker processes die with their parent.

`docker stop`, systemd and `timeout` send SIGTERM, whose default action kills the process at once: the
outputs of `dfd live` and `dfd detect -o` were lost and their temporary files left behind. Raising
KeyboardInterrupt instead runs the same clean stop as Ctrl-C (results so far published, temporaries
removed).

A process that gets SIGKILL cannot clean up; its worker processes must not keep running (and writing)
without it: `die_with_parent` asks Linux to kill the worker when its parent goes (PR_SET_PDEATHSIG),
and a watchdog thread covers other systems and the case where the parent died first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_received: list[int] = []


def _interrupt(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While inside: SIGTERM raises KeyboardInterrupt in the main thread, as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupt_exit_code() -> int:
    """128 + the signal that stopped the command: 143 after SIGTERM, 130 after Ctrl-C (SIGINT)."""
    return 128 + (_received[-1] if _received else signal.SIGINT)


def interrupt_name() -> str:
    return signal.Signals(_received[-1]).name if _received else "SIGINT"


def die_with_parent(parent: int | None = None, *, poll_seconds: float = 1.0) -> None:
    """Make this (worker) process exit when its parent dies, even by SIGKILL. Call it first thing in
    the worker (a pool initializer); `parent`: the pid the parent passed (os.getpid() there), which
    also catches a parent that died before this call."""
    parent = os.getppid() if parent is None else parent
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        except (OSError, AttributeError) as exc:  # no libc to load: the watchdog below still works
            log.debug("prctl unavailable: %s", exc)
    if os.getppid() != parent:  # the parent died before we asked
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)  # orphaned: adopted by init (or a subreaper), so the parent is gone

    threading.Thread(target=watch, daemon=True, name="dfd-parent-watch").start()
