"""A thread-safe queue that serves waiting callers in turn: round-robin across keys.

One API key sending fifty requests does not make everyone else wait behind all fifty: each key
with work waiting gets the next slot in rotation; within a key, requests run first-in first-out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    def __init__(self) -> None:
        self._queues: OrderedDict[str, deque[T]] = OrderedDict()
        self._size = 0
        self._closed = False
        self._cond = threading.Condition()

    def put(self, key: str, item: T) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("queue is closed")
            self._queues.setdefault(key, deque()).append(item)
            self._size += 1
            self._cond.notify()

    def get(self) -> T | None:
        """The next item in rotation; blocks while empty; None once closed and drained."""
        with self._cond:
            while not self._size:
                if self._closed:
                    return None
                self._cond.wait()
            key, items = next(iter(self._queues.items()))
            item = items.popleft()
            self._size -= 1
            del self._queues[key]
            if items:  # back of the rotation
                self._queues[key] = items
            return item

    def waiting(self, key: str) -> int:
        """How many items ``key`` has waiting."""
        with self._cond:
            items = self._queues.get(key)
            return len(items) if items else 0

    def discard(self, key: str, item: T) -> bool:
        """Remove an item that has not started (its caller went away)."""
        with self._cond:
            items = self._queues.get(key)
            if items is None or item not in items:
                return False
            items.remove(item)
            self._size -= 1
            if not items:
                del self._queues[key]
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        return self._size
