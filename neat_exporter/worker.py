"""One daemon thread draining a bounded queue, so that callers never wait for a remote service.

The global manager requests (neat_exporter.actions) and the Watcher triggers
(neat_exporter.watcher) go through it: ``offer`` returns at once, False when the queue is full;
``wait_idle`` waits until every item offered has been handled.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
_STOP = object()


class QueueWorker(Generic[T]):
    """Calls ``handle(item)`` for each item offered, in order, from one thread named ``name``.
    An exception of ``handle`` is logged and the worker goes on."""

    def __init__(self, name: str, handle: Callable[[T], None], queue_size: int):
        self._handle = handle
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    @property
    def maxsize(self) -> int:
        return self._queue.maxsize

    @property
    def queue_length(self) -> int:
        return self._queue.qsize()

    def offer(self, item: T) -> bool:
        """Queue ``item``; False when the queue is full."""
        with self._lock:
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                return False
            self._pending += 1
        return True

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self._handle(item)
            except Exception:  # a bug must not kill the worker and silently stop everything
                log.exception("%s: handling %r failed unexpectedly", self._thread.name, item)
            with self._lock:
                self._pending -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every item offered has been handled; False on timeout."""
        with self._lock:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 1.0) -> bool:
        """Stop once the queue is drained (waits at most ``timeout`` seconds); True when the
        thread ended."""
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return False  # the daemon thread ends with the process
        self._thread.join(timeout)
        return not self._thread.is_alive()
