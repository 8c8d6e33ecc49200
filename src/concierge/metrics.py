"""Prometheus metrics, one registry per app (two apps in one process never mix figures)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from concierge.models.admission import WAIT_BUCKETS, QueueStats

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
)


class _Queues(Collector):
    """The model backends' queues: depth now, time waited, requests turned away."""

    def __init__(
        self,
        depth: Callable[[], dict[str, int]],
        stats: Callable[[], dict[str, QueueStats]],
    ) -> None:
        self.depth = depth
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "concierge_model_queue_depth", "Requests waiting for a model backend", labels=["model"]
        )
        for model, depth in self.depth().items():
            family.add_metric([model], depth)
        yield family
        waits = HistogramMetricFamily(
            "concierge_model_queue_wait_seconds",
            "Time requests waited for their turn on a model backend",
            labels=["model"],
        )
        rejected = CounterMetricFamily(
            "concierge_model_queue_rejected",
            "Requests turned away at a model's queue (per_key: 429; queue_full, "
            "expected_wait, waited_too_long: 503)",
            labels=["model", "reason"],
        )
        for model, stats in self.stats().items():
            buckets, total, refused = stats.snapshot()
            cumulative, running = [], 0
            for bound, count in zip([*WAIT_BUCKETS, float("inf")], buckets, strict=True):
                running += count
                cumulative.append((str(bound) if bound != float("inf") else "+Inf", running))
            waits.add_metric([model], cumulative, total)
            for reason, count in sorted(refused.items()):
                rejected.add_metric([model, reason], count)
        yield waits
        yield rejected


class Metrics:
    def __init__(
        self,
        queue_depth: Callable[[], dict[str, int]],
        queue_stats: Callable[[], dict[str, QueueStats]] = dict,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "concierge_requests",
            "API requests by endpoint and HTTP status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "concierge_request_duration_seconds",
            "Time to the last byte of the response",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "concierge_time_to_first_token_seconds",
            "Time to the first generated token",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "concierge_tokens",
            "Tokens processed, by model and kind (prompt, completion)",
            ["model", "kind"],
            registry=self.registry,
        )
        self.registry.register(_Queues(queue_depth, queue_stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)
