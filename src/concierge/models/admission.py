"""Back-pressure for a backend that serves one request at a time: a bounded, honest queue.

An unbounded queue in front of a model that takes seconds per answer turns a burst into
minutes of waiting for everyone, with no answer at all for most. :class:`Admission` decides at
the door, before a request joins the queue:

- a key that already has ``max_per_key`` requests waiting gets **429** (its own burst; others
  are not made to wait behind it);
- a full queue (``max_queue``), or one whose expected wait (the requests ahead times the
  recent time per request) is over ``max_wait`` seconds, gets **503**;

both with ``Retry-After`` set from that expected wait. A request admitted that still waits
past ``max_wait`` (the estimate was wrong) leaves the queue with a 503 too. Service order stays
fair across keys (:class:`~concierge.models.fairqueue.FairQueue`).

:class:`QueueStats` keeps what the metrics show: the time requests waited, and how many were
turned away and why.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from concierge.errors import RateLimited, ServiceUnavailable

WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
EMA_WEIGHT = 0.2  # of the newest request's time in the running estimate


class Busy(ServiceUnavailable):
    """The model's queue is full; come back later (503 with Retry-After)."""

    code = "model_busy"

    def __init__(self, message: str, retry_after: float) -> None:
        seconds = max(1, int(retry_after + 0.999))
        super().__init__(message, headers={"Retry-After": str(seconds)})
        self.retry_after = seconds


@dataclass
class QueueStats:
    """Counters for one backend's queue, safe to update from any thread."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(WAIT_BUCKETS) + 1))
    wait_sum: float = 0.0
    rejected: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def waited(self, seconds: float) -> None:
        with self._lock:
            index = next((i for i, b in enumerate(WAIT_BUCKETS) if seconds <= b), -1)
            self.buckets[index] += 1
            self.wait_sum += seconds

    def refused(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def snapshot(self) -> tuple[list[int], float, dict[str, int]]:
        with self._lock:
            return list(self.buckets), self.wait_sum, dict(self.rejected)


class Admission:
    """The door of one backend's queue."""

    def __init__(self, model_id: str, max_queue: int, max_per_key: int, max_wait: float) -> None:
        self.model_id = model_id
        self.max_queue = max_queue
        self.max_per_key = max_per_key
        self.max_wait = max_wait
        self.stats = QueueStats()
        self.running = 0  # requests on the backend now (set by it)
        self._waiting: dict[str, int] = {}
        self._seconds_per_request: float | None = None
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        return sum(self._waiting.values())

    def enter(self, key: str) -> None:
        """Take a place in the queue for ``key`` (or raise, see :meth:`admit`); each place is
        given back with :meth:`leave` once the request starts or gives up."""
        with self._lock:
            self.admit(self.waiting, self._waiting.get(key, 0), self.running)
            self._waiting[key] = self._waiting.get(key, 0) + 1

    def leave(self, key: str) -> None:
        with self._lock:
            left = self._waiting.get(key, 0) - 1
            if left > 0:
                self._waiting[key] = left
            else:
                self._waiting.pop(key, None)

    def expected_wait(self, ahead: int) -> float | None:
        """Seconds a request with ``ahead`` requests before it (the running one included)
        should wait, from recent requests; None before any finished."""
        per = self._seconds_per_request
        return None if per is None else per * ahead

    def admit(self, waiting: int, waiting_for_key: int, running: int) -> None:
        """Raise :class:`RateLimited` or :class:`Busy` for a request that should not queue."""
        retry = self.expected_wait(waiting + running) or 1.0
        if waiting_for_key >= self.max_per_key:
            self.stats.refused("per_key")
            raise RateLimited(
                f"{waiting_for_key} of your requests are already waiting for {self.model_id}; "
                "send the next one when one has finished",
                retry_after=retry,
                code="too_many_waiting_requests",
            )
        if waiting >= self.max_queue:
            self.stats.refused("queue_full")
            raise Busy(
                f"{self.model_id} is busy: {waiting} requests are waiting; try again shortly",
                retry,
            )
        # With nobody waiting, the request is next: it is let in whatever the running one costs.
        expected = self.expected_wait(waiting + running) if waiting else None
        if expected is not None and expected > self.max_wait:
            self.stats.refused("expected_wait")
            raise Busy(
                f"{self.model_id} is busy: the wait would be about {expected:.0f} s; "
                "try again shortly",
                expected - self.max_wait,
            )

    def timed_out(self, waited: float) -> Busy:
        self.stats.refused("waited_too_long")
        return Busy(
            f"{self.model_id} is busy: no turn within {waited:.0f} s; try again shortly",
            self.expected_wait(1) or 1.0,
        )

    def served(self, seconds: float) -> None:
        """A request held the backend for ``seconds``: update the running estimate."""
        with self._lock:
            if self._seconds_per_request is None:
                self._seconds_per_request = seconds
            else:
                self._seconds_per_request += EMA_WEIGHT * (seconds - self._seconds_per_request)
