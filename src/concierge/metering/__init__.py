"""Metering: the usage ledger, rate limits and quotas, and the per-request meter tying them."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from concierge.errors import ConciergeError
from concierge.keys import ApiKey
from concierge.metering.ledger import UsageLedger, UsageRecord
from concierge.metering.limits import Limiter
from concierge.metrics import Metrics
from concierge.models.base import Usage


@dataclass
class Meter:
    """One request's measurement. :meth:`finish` records it once, whatever path ends it."""

    metering: Metering
    key: ApiKey
    endpoint: str
    model: str | None
    # 128 random bits, as a uuid4 has, without its system call: ids need be unique, not secret.
    request_id: str = field(default_factory=lambda: f"{random.getrandbits(128):032x}")
    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    done: bool = False

    def mark_first_token(self) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter()
            if self.model:
                self.metering.metrics.ttft.labels(self.model).observe(
                    self.first_token - self.started
                )

    async def finish(
        self,
        status: int,
        usage: Usage | None = None,
        *,
        model: str | None = None,
        error_code: str | None = None,
    ) -> None:
        if self.done:
            return
        self.done = True
        usage = usage or Usage()
        model = model or self.model
        elapsed = time.perf_counter() - self.started
        m = self.metering
        m.ledger.record(
            UsageRecord(
                request_id=self.request_id,
                created_at=datetime.now(UTC),
                org_id=self.key.org_id,
                api_key_id=self.key.id,
                endpoint=self.endpoint,
                model=model,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                latency_ms=round(elapsed * 1000, 3),
                status=status,
                error_code=error_code,
            )
        )
        m.metrics.requests.labels(self.endpoint, str(status)).inc()
        m.metrics.latency.labels(self.endpoint).observe(elapsed)
        if usage.total_tokens:
            if model:
                m.metrics.tokens.labels(model, "prompt").inc(usage.prompt_tokens)
                m.metrics.tokens.labels(model, "completion").inc(usage.completion_tokens)
            # Whatever ended the request (a hang-up included), what it used is charged.
            await m.limiter.charge(self.key, usage.total_tokens)

    async def fail(self, exc: BaseException) -> None:
        """Record a request that ended in ``exc`` (500 unless it is a ConciergeError)."""
        if isinstance(exc, ConciergeError):
            await self.finish(exc.status, error_code=exc.code or exc.type)
        elif isinstance(exc, Exception):
            await self.finish(500, error_code="server_error")
        else:  # cancelled: the client or the server went away
            await self.finish(499, error_code="cancelled")


class Metering:
    def __init__(self, ledger: UsageLedger, limiter: Limiter, metrics: Metrics) -> None:
        self.ledger = ledger
        self.limiter = limiter
        self.metrics = metrics

    async def begin(self, key: ApiKey, endpoint: str, model: str | None) -> Meter:
        """Admit a request (429 if a limit says no; that refusal is recorded too)."""
        meter = Meter(self, key, endpoint, model)
        try:
            await self.limiter.admit(key)
        except ConciergeError as exc:
            await meter.fail(exc)
            raise
        return meter
