"""Background prefetching: a producer thread fills a bounded queue so the consumer never waits on sampling.

NumPy releases the GIL while copying large arrays, so batch assembly overlaps with the training step.
The order of items is the producer's order, so a seeded producer stays deterministic.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Prefetcher"]

T = TypeVar("T")
_POLL_S = 0.05


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher(Generic[T]):
    """Iterate over ``produce()`` results computed ahead of time in a daemon thread.

    Args:
        produce: called repeatedly in the thread; an exception stops the thread and is raised to the
            consumer by the next ``next()`` call.
        size: how many items may wait in the queue (at least 1).

    Use as a context manager, or call ``close()``, to stop the thread.
    """

    def __init__(self, produce: Callable[[], T], size: int = 2):
        if size < 1:
            raise ValueError(f"prefetch size must be at least 1, got {size}")
        self._produce = produce
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._failed = False
        self._thread = threading.Thread(target=self._run, name="datasets-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._produce()
            except BaseException as error:  # handed to the consumer, who re-raises it
                item = _Failure(error)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=_POLL_S)
                    break
                except queue.Full:
                    continue
            if isinstance(item, _Failure):
                return

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        if self._failed or (self._stop.is_set() and self._queue.empty()):
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, _Failure):
            self._failed = True
            raise item.error
        return item

    def close(self) -> None:
        """Stop the producer thread and drop queued items."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
