"""Prometheus metrics, one registry per app (two apps in one process never mix figures)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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


class _QueueDepth(Collector):
    def __init__(self, source: Callable[[], dict[str, int]]) -> None:
        self.source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "concierge_model_queue_depth", "Requests waiting for a model backend", labels=["model"]
        )
        for model, depth in self.source().items():
            family.add_metric([model], depth)
        yield family


class Metrics:
    def __init__(self, queue_depth: Callable[[], dict[str, int]]) -> None:
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
        self.registry.register(_QueueDepth(queue_depth))

    def render(self) -> bytes:
        return generate_latest(self.registry)
