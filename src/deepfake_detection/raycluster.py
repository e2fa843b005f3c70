"""Joining or starting a Ray runtime, for `dfd scan` and `dfd prepare --ray-address`.

Ray is an optional extra: importing it goes through `import_ray`, which turns its absence into a
MissingExtraError naming the pip command. A runtime this package started is shut down when the work
ends; one that was already running in the process (a notebook, a test) or a cluster it joined is left
as it was (`ray.shutdown` only disconnects from a cluster).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from deepfake_detection.errors import DFDError, MissingExtraError
from deepfake_detection.runtime import available_cores

INSTALL_HINT = "pip install 'deepfake-detection[distributed]'"
LOCAL = "local"  # --ray-address local: a fresh runtime on this machine (the default without an address)


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (the [data] part of the extra)
    except ImportError as exc:
        raise MissingExtraError(f"this needs Ray, an optional extra ({exc}); install it with: "
                                f"{INSTALL_HINT}") from None
    return ray


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast on a host:port nobody listens on: Ray itself keeps retrying for minutes."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms are Ray's to resolve
    if host.startswith("[") and host.endswith("]"):  # [::1]:6379, an IPv6 address
        host = host[1:-1]
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise DFDError(f"cannot reach the Ray cluster at {address}: {exc}") from None


@contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[Any]:
    """The `ray` module, connected: to `address` (host:port, ray://host:port or "auto"), or to a
    new local runtime sized to this machine when `address` is None or "local"."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    # Workers log to the driver at WARNING: Ray Data's INFO lines would bury our own progress bar.
    common: dict[str, Any] = {"logging_level": logging.WARNING, "configure_logging": True}
    watchdog = None
    try:
        if address in (None, LOCAL):
            watchdog = _watch_helpers()
            # address="local": a new runtime even where RAY_ADDRESS is set or `ray start` ran on this
            # machine (without it Ray would join that cluster, then refuse num_cpus).
            ray.init(address=LOCAL, num_cpus=num_cpus or available_cores(), include_dashboard=False,
                     **common)
        else:
            _check_reachable(address)
            ray.init(address=address, **common)
    except DFDError:
        raise
    except Exception as exc:  # ConnectionError, timeouts, a bad address: one message, no traceback
        ray.shutdown()  # a runtime that half started must not outlive the command
        _stop_watching(watchdog)
        where = "a local Ray runtime" if address in (None, LOCAL) else f"the Ray cluster at {address}"
        raise DFDError(f"cannot start or join {where}: {exc}") from None
    try:
        yield ray
    finally:
        ray.shutdown()
        _stop_watching(watchdog)


def _watch_helpers() -> subprocess.Popen[bytes] | None:
    """Mark this process's environment (the Ray helpers it starts inherit it) and start a watchdog
    that kills them if this process dies without shutting Ray down (SIGKILL). Linux only (/proc)."""
    from deepfake_detection.raywatch import MARK

    if not sys.platform.startswith("linux"):
        return None
    os.environ[MARK] = str(os.getpid())
    return subprocess.Popen([sys.executable, "-m", "deepfake_detection.raywatch", str(os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # not in our process group: Ctrl-C is ours alone


def _stop_watching(watchdog: subprocess.Popen[bytes] | None) -> None:
    from deepfake_detection.raywatch import MARK

    if watchdog is not None:
        watchdog.kill()
        watchdog.wait()
        os.environ.pop(MARK, None)
