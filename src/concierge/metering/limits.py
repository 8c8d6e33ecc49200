"""Per-key rate limits (requests/min, tokens/min) and token quotas (per UTC day and month).

Rate limits are token buckets: a key may burst up to its per-minute figure and refills
continuously. A request is admitted when its key has a request to spend and its token bucket is
not in debt; its tokens are charged when it finishes (they are not known before), so one large
request can put a bucket in debt, and the next request waits until it is repaid. Quotas count
the tokens of the current UTC day / month, starting from the usage ledger the first time a key
is seen in a period. Refusals raise 429 errors carrying ``Retry-After``.

:class:`MemoryLimiter` keeps state in the process (one replica). :class:`RedisLimiter` keeps it
in Redis, so every replica behind a load balancer enforces the same limits.
"""

from __future__ import annotations

import calendar
import functools
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from concierge.errors import QuotaExceeded, RateLimited
from concierge.keys import ApiKey

MAX_NAMED_BUCKETS = 100_000  # per-address and per-visitor buckets kept in one process
# Tokens used by a key since a moment, from the ledger: (api_key_id, since) -> tokens.
UsageSource = Callable[[int, datetime], Awaitable[int]]


@dataclass(frozen=True)
class Period:
    kind: str  # "day" | "month"
    start: datetime
    end: datetime

    @property
    def tag(self) -> str:
        return self.start.strftime("%Y%m%d" if self.kind == "day" else "%Y%m")


def periods(now: float) -> tuple[Period, Period]:
    """The UTC day and month that ``now`` falls in."""
    return _periods_of_day(int(now // 86400))


@functools.lru_cache(maxsize=4)
def _periods_of_day(day_number: int) -> tuple[Period, Period]:
    day = datetime.fromtimestamp(day_number * 86400, UTC)
    month = day.replace(day=1)
    days_in_month = calendar.monthrange(day.year, day.month)[1]
    return (
        Period("day", day, datetime.fromtimestamp(day.timestamp() + 86400, UTC)),
        Period(
            "month", month, datetime.fromtimestamp(month.timestamp() + days_in_month * 86400, UTC)
        ),
    )


_PERIODIC = {"day": "daily", "month": "monthly"}


def _quota_error(key: ApiKey, period: Period, limit: int, now: float) -> QuotaExceeded:
    return QuotaExceeded(
        f"API key {key.prefix}… has used its {_PERIODIC[period.kind]} quota of {limit} tokens; "
        f"it resets at {period.end.isoformat()}",
        retry_after=period.end.timestamp() - now,
    )


class Limiter(ABC):
    def __init__(self, usage: UsageSource) -> None:
        self.usage = usage

    @abstractmethod
    async def admit(self, key: ApiKey, now: float | None = None) -> None:
        """Let a request of ``key`` through, or raise RateLimited / QuotaExceeded."""

    @abstractmethod
    async def charge(self, key: ApiKey, tokens: int, now: float | None = None) -> None:
        """Count ``tokens`` that a finished request of ``key`` used."""

    @abstractmethod
    async def hit(self, name: str, per_minute: int, what: str, now: float | None = None) -> None:
        """Count one request against the bucket ``name`` (a client address, a visitor), which
        allows ``per_minute``; raise RateLimited, saying ``what`` is over, when it is empty."""

    async def close(self) -> None:
        """Release connections."""


@dataclass
class _Bucket:
    tokens: float
    stamp: float

    def refill(self, capacity: int, now: float) -> None:
        self.tokens = min(capacity, self.tokens + (now - self.stamp) * capacity / 60.0)
        self.stamp = now


class MemoryLimiter(Limiter):
    def __init__(self, usage: UsageSource) -> None:
        super().__init__(usage)
        self._requests: dict[int, _Bucket] = {}
        self._tokens: dict[int, _Bucket] = {}
        self._used: dict[tuple[int, str, str], int] = {}
        self._named: dict[str, _Bucket] = {}
        self._pruned = 0.0

    async def hit(self, name: str, per_minute: int, what: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if len(self._named) > MAX_NAMED_BUCKETS and now - self._pruned > 10:
            self._prune(now)
        bucket = self._named.setdefault(name, _Bucket(per_minute, now))
        bucket.refill(per_minute, now)
        if bucket.tokens < 1:
            raise RateLimited(
                f"too many {what}: the limit is {per_minute} a minute",
                retry_after=(1 - bucket.tokens) * 60.0 / per_minute,
            )
        bucket.tokens -= 1

    def _prune(self, now: float) -> None:
        """Keep the named buckets bounded: a bucket untouched for a minute is full again and
        says nothing; if that is not enough, the least recently used half goes."""
        self._pruned = now
        self._named = {k: b for k, b in self._named.items() if now - b.stamp < 60}
        if len(self._named) > MAX_NAMED_BUCKETS:
            newest = sorted(self._named.items(), key=lambda kv: kv[1].stamp)
            self._named = dict(newest[len(newest) // 2 :])

    async def admit(self, key: ApiKey, now: float | None = None) -> None:
        now = time.time() if now is None else now
        limits = key.limits
        if limits.tokens_per_minute:
            bucket = self._tokens.setdefault(key.id, _Bucket(limits.tokens_per_minute, now))
            bucket.refill(limits.tokens_per_minute, now)
            if bucket.tokens < 1:
                raise RateLimited(
                    f"API key {key.prefix}… is over its limit of {limits.tokens_per_minute} "
                    "tokens per minute",
                    retry_after=(1 - bucket.tokens) * 60.0 / limits.tokens_per_minute,
                    code="tokens_per_minute_exceeded",
                )
        for period, limit in zip(
            periods(now), (limits.tokens_per_day, limits.tokens_per_month), strict=True
        ):
            if limit:
                used = await self._period_usage(key, period)
                if used >= limit:
                    raise _quota_error(key, period, limit, now)
        if limits.requests_per_minute:
            bucket = self._requests.setdefault(key.id, _Bucket(limits.requests_per_minute, now))
            bucket.refill(limits.requests_per_minute, now)
            if bucket.tokens < 1:
                raise RateLimited(
                    f"API key {key.prefix}… is over its limit of {limits.requests_per_minute} "
                    "requests per minute",
                    retry_after=(1 - bucket.tokens) * 60.0 / limits.requests_per_minute,
                    code="requests_per_minute_exceeded",
                )
            bucket.tokens -= 1

    async def _period_usage(self, key: ApiKey, period: Period) -> int:
        slot = (key.id, period.kind, period.tag)
        if slot not in self._used:
            self._used[slot] = await self.usage(key.id, period.start)
        return self._used[slot]

    async def charge(self, key: ApiKey, tokens: int, now: float | None = None) -> None:
        if tokens <= 0:
            return
        now = time.time() if now is None else now
        if key.limits.tokens_per_minute:
            bucket = self._tokens.setdefault(key.id, _Bucket(key.limits.tokens_per_minute, now))
            bucket.refill(key.limits.tokens_per_minute, now)
            bucket.tokens -= tokens
        if not (key.limits.tokens_per_day or key.limits.tokens_per_month):
            return
        for period in periods(now):
            slot = (key.id, period.kind, period.tag)
            if slot in self._used:
                self._used[slot] += tokens


# Token bucket in Redis: KEYS[1] bucket; ARGV capacity, now, cost (spend), need (admit test).
# Returns 0 when admitted, else the milliseconds to wait.
_BUCKET_LUA = """
local cap = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local need = tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1]) or cap
local stamp = tonumber(state[2]) or now
tokens = math.min(cap, tokens + (now - stamp) * cap / 60.0)
if need > 0 and tokens < need then
  redis.call('HSET', KEYS[1], 'tokens', tokens, 'stamp', now)
  redis.call('EXPIRE', KEYS[1], 120)
  return math.ceil((need - tokens) * 60000.0 / cap)
end
tokens = tokens - cost
redis.call('HSET', KEYS[1], 'tokens', tokens, 'stamp', now)
redis.call('EXPIRE', KEYS[1], 120)
return 0
"""


class RedisLimiter(Limiter):
    """The same limits, shared by every replica through Redis."""

    def __init__(self, usage: UsageSource, url: str, prefix: str = "concierge") -> None:
        super().__init__(usage)
        import redis.asyncio as aioredis

        self.redis = aioredis.from_url(url)
        self.prefix = prefix
        self._bucket = self.redis.register_script(_BUCKET_LUA)

    def _k(self, *parts: object) -> str:
        return ":".join([self.prefix, *map(str, parts)])

    async def admit(self, key: ApiKey, now: float | None = None) -> None:
        now = time.time() if now is None else now
        limits = key.limits
        if limits.tokens_per_minute:
            wait = int(
                await self._bucket(
                    keys=[self._k("tpm", key.id)], args=[limits.tokens_per_minute, now, 0, 1]
                )
            )
            if wait:
                raise RateLimited(
                    f"API key {key.prefix}… is over its limit of {limits.tokens_per_minute} "
                    "tokens per minute",
                    retry_after=wait / 1000.0,
                    code="tokens_per_minute_exceeded",
                )
        for period, limit in zip(
            periods(now), (limits.tokens_per_day, limits.tokens_per_month), strict=True
        ):
            if limit:
                slot = self._k("quota", key.id, period.tag)
                used = await self.redis.get(slot)
                if used is None:
                    seeded = await self.usage(key.id, period.start)
                    ttl = int(period.end.timestamp() - now) + 3600
                    await self.redis.set(slot, seeded, ex=ttl, nx=True)
                    used = await self.redis.get(slot)
                if int(used or 0) >= limit:
                    raise _quota_error(key, period, limit, now)
        if limits.requests_per_minute:
            wait = int(
                await self._bucket(
                    keys=[self._k("rpm", key.id)], args=[limits.requests_per_minute, now, 1, 1]
                )
            )
            if wait:
                raise RateLimited(
                    f"API key {key.prefix}… is over its limit of {limits.requests_per_minute} "
                    "requests per minute",
                    retry_after=wait / 1000.0,
                    code="requests_per_minute_exceeded",
                )

    async def hit(self, name: str, per_minute: int, what: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        wait = int(await self._bucket(keys=[self._k("hit", name)], args=[per_minute, now, 1, 1]))
        if wait:
            raise RateLimited(
                f"too many {what}: the limit is {per_minute} a minute", retry_after=wait / 1000.0
            )

    async def charge(self, key: ApiKey, tokens: int, now: float | None = None) -> None:
        if tokens <= 0:
            return
        now = time.time() if now is None else now
        if key.limits.tokens_per_minute:
            await self._bucket(
                keys=[self._k("tpm", key.id)], args=[key.limits.tokens_per_minute, now, tokens, 0]
            )
        if not (key.limits.tokens_per_day or key.limits.tokens_per_month):
            return
        for period in periods(now):
            slot = self._k("quota", key.id, period.tag)
            # Only counters that were seeded from the ledger are kept up to date.
            if await self.redis.exists(slot):
                await self.redis.incrby(slot, tokens)

    async def close(self) -> None:
        await self.redis.aclose()
