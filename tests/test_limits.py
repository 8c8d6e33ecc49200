"""Rate limits and quotas, in-process and in Redis, with a controlled clock."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from concierge.errors import QuotaExceeded, RateLimited
from concierge.keys import ApiKey, Limits
from concierge.metering.limits import Limiter, MemoryLimiter, RedisLimiter, periods

T0 = datetime(2026, 11, 22, 23, 59, 0, tzinfo=UTC).timestamp()


def make_key(**limits: int) -> ApiKey:
    return ApiKey(
        id=abs(hash(uuid.uuid4())) % 10**9,
        org_id=1,
        org_slug="o",
        name="k",
        prefix="sk-cc-abcdef",
        scopes=frozenset({"inference"}),
        limits=Limits(**limits),
        created_at=datetime.now(UTC),
        revoked_at=None,
    )


class Ledger:
    def __init__(self, used: int = 0) -> None:
        self.used = used
        self.calls = 0

    async def __call__(self, key_id: int, since: datetime) -> int:
        self.calls += 1
        return self.used


@pytest.fixture(params=["memory", "redis"])
async def limiter_factory(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    made: list[Limiter] = []

    def make(ledger: Ledger) -> Limiter:
        if request.param == "memory":
            limiter: Limiter = MemoryLimiter(ledger)
        else:
            limiter = RedisLimiter(
                ledger, "redis://127.0.0.1:6379/15", prefix=f"test-{uuid.uuid4().hex[:8]}"
            )
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.close()


async def test_requests_per_minute(limiter_factory) -> None:
    limiter = limiter_factory(Ledger())
    key = make_key(requests_per_minute=3)
    for _ in range(3):
        await limiter.admit(key, now=T0)
    with pytest.raises(RateLimited) as info:
        await limiter.admit(key, now=T0)
    assert info.value.code == "requests_per_minute_exceeded"
    assert info.value.retry_after == 20  # one request refills in 60/3 s
    await limiter.admit(key, now=T0 + 20.5)  # refilled


async def test_tokens_per_minute_goes_into_debt(limiter_factory) -> None:
    limiter = limiter_factory(Ledger())
    key = make_key(tokens_per_minute=600)
    await limiter.admit(key, now=T0)
    await limiter.charge(key, 900, now=T0)  # a large answer: 300 tokens in debt
    with pytest.raises(RateLimited) as info:
        await limiter.admit(key, now=T0 + 1)
    assert info.value.code == "tokens_per_minute_exceeded"
    assert 29 <= info.value.retry_after <= 31  # (290 + 1) tokens at 10 tokens/s
    await limiter.admit(key, now=T0 + 31)


async def test_daily_quota_starts_from_the_ledger(limiter_factory) -> None:
    ledger = Ledger(used=95)
    limiter = limiter_factory(ledger)
    key = make_key(tokens_per_day=100)
    await limiter.admit(key, now=T0)
    await limiter.charge(key, 5, now=T0)
    with pytest.raises(QuotaExceeded) as info:
        await limiter.admit(key, now=T0 + 1)
    assert info.value.retry_after == 59  # until midnight UTC
    assert ledger.calls == 1  # the ledger is read once per period, not per request
    await limiter.admit(key, now=T0 + 61)  # a new day: counted afresh from the ledger
    assert ledger.calls == 2


async def test_monthly_quota(limiter_factory) -> None:
    limiter = limiter_factory(Ledger(used=1000))
    with pytest.raises(QuotaExceeded, match="monthly quota of 1000"):
        await limiter.admit(make_key(tokens_per_month=1000), now=T0)


async def test_unlimited_keys_never_touch_the_ledger(limiter_factory) -> None:
    ledger = Ledger()
    limiter = limiter_factory(ledger)
    key = make_key()
    for _ in range(100):
        await limiter.admit(key, now=T0)
        await limiter.charge(key, 1000, now=T0)
    assert ledger.calls == 0


async def test_redis_limits_are_shared_between_replicas() -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    a = RedisLimiter(Ledger(), "redis://127.0.0.1:6379/15", prefix=prefix)
    b = RedisLimiter(Ledger(), "redis://127.0.0.1:6379/15", prefix=prefix)
    key = make_key(requests_per_minute=2)
    await a.admit(key, now=T0)
    await b.admit(key, now=T0)
    with pytest.raises(RateLimited):
        await a.admit(key, now=T0)
    await a.close()
    await b.close()


def test_periods() -> None:
    day, month = periods(datetime(2026, 2, 10, 15, 0, tzinfo=UTC).timestamp())
    assert day.start == datetime(2026, 2, 10, tzinfo=UTC) and day.end == datetime(
        2026, 2, 11, tzinfo=UTC
    )
    assert month.start == datetime(2026, 2, 1, tzinfo=UTC) and month.end == datetime(
        2026, 3, 1, tzinfo=UTC
    )
