"""A bounded worker pool with a bounded queue: when both are full, callers get `PoolFull` (-> 503).

Inference is CPU-bound and holds decoded images in memory, so the number of requests admitted at
once is capped (workers + queue); everything beyond is refused at once instead of piling up.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class PoolFull(Exception):
    """Every worker is busy and the queue is full."""


class WorkerPool:
    def __init__(self, workers: int, queue: int, *, name: str = "dfd-worker") -> None:
        self.workers = workers
        self.capacity = workers + queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._admitted = 0  # queued + running
        self._running = 0

    @property
    def queue_depth(self) -> int:
        """Admitted tasks not yet picked up by a worker."""
        with self._lock:
            return self._admitted - self._running

    @property
    def full(self) -> bool:
        with self._lock:
            return self._admitted >= self.capacity

    @property
    def running(self) -> int:
        with self._lock:
            return self._running

    def _admit(self) -> None:
        with self._lock:
            if self._admitted >= self.capacity:
                raise PoolFull(f"all {self.workers} workers busy and the queue is full")
            self._admitted += 1

    def _wrap(self, fn: Callable[..., T], args: tuple[Any, ...]) -> Callable[[], T]:
        def run() -> T:
            with self._lock:
                self._running += 1
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self._running -= 1
                    self._admitted -= 1

        return run

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(*args) on a worker thread; raises PoolFull at once when no slot is free."""
        self._admit()
        try:
            future = self._executor.submit(self._wrap(fn, args))
        except BaseException:
            with self._lock:
                self._admitted -= 1
            raise
        # shield: a client that disconnects must not cancel the bookkeeping; the work finishes anyway.
        return await asyncio.shield(asyncio.wrap_future(future))

    def submit(self, fn: Callable[..., T], *args: Any) -> None:
        """Fire-and-forget (video jobs); raises PoolFull at once when no slot is free."""
        self._admit()
        try:
            self._executor.submit(self._wrap(fn, args))
        except BaseException:
            with self._lock:
                self._admitted -= 1
            raise

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
