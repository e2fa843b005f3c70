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
            self._release()
            raise
        # shield: a client that disconnects must not cancel the bookkeeping; the work finishes anyway.
        return await asyncio.shield(asyncio.wrap_future(future))

    def submit(self, fn: Callable[..., T], *args: Any) -> None:
        """Fire-and-forget; raises PoolFull at once when no slot is free."""
        with self.reserve() as slot:
            slot.submit(fn, *args)

    def reserve(self) -> Slot:
        """Hold a slot while the caller gets a task ready (a video upload: copy and check it), so only
        admitted work uses the machine; raises PoolFull at once. Use as a context manager: the slot
        goes back on leaving it unless `slot.submit` handed it to a task."""
        self._admit()
        return Slot(self)

    def _release(self) -> None:
        with self._lock:
            self._admitted -= 1

    def _submit_admitted(self, fn: Callable[..., T], args: tuple[Any, ...]) -> None:
        try:
            self._executor.submit(self._wrap(fn, args))
        except BaseException:
            self._release()
            raise

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class Slot:
    """A reserved place in a WorkerPool (see WorkerPool.reserve)."""

    def __init__(self, pool: WorkerPool) -> None:
        self._pool: WorkerPool | None = pool

    def submit(self, fn: Callable[..., T], *args: Any) -> None:
        """Run fn(*args) in this slot, fire-and-forget."""
        pool, self._pool = self._pool, None
        if pool is None:
            raise RuntimeError("this slot was used already")
        pool._submit_admitted(fn, args)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool._release()
