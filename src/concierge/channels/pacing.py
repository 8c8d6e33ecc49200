"""Per-sender pacing: no more than a channel's messages-per-second leave one sending number,
page or bot, across every replica.

GCRA (the generic cell rate algorithm) with reservations: each send reserves the next free
slot, ``1 / rate`` seconds after the previous one, and waits for it. A platform's own "slow
down" (a 429, WhatsApp's 130429) pushes the next slot back by the wait it asked for. The
memory pacer serves one process; the Redis pacer keeps the schedule in Redis, timed by the
Redis server's clock, so replicas share it.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod

_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local penalty = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if penalty > 0 then
  local until_ms = now + penalty
  if until_ms > tat then tat = until_ms end
  redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil(tat - now + 60000))
  return 0
end
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', math.ceil(tat + interval - now + 60000))
return math.floor((tat - now) * 1000)
"""


class Pacer(ABC):
    @abstractmethod
    async def reserve(self, sender: str, rate: float) -> float:
        """Reserve the sender's next slot: seconds to wait before sending."""

    @abstractmethod
    async def hold(self, sender: str, seconds: float) -> None:
        """The platform asked this sender to wait: no slot before ``seconds`` from now."""

    async def wait(self, sender: str, rate: float) -> None:
        delay = await self.reserve(sender, rate)
        if delay > 0:
            await asyncio.sleep(delay)

    async def close(self) -> None:
        return None


class MemoryPacer(Pacer):
    def __init__(self) -> None:
        self._next: dict[str, float] = {}

    async def reserve(self, sender: str, rate: float) -> float:
        now = time.monotonic()
        slot = max(self._next.get(sender, now), now)
        self._next[sender] = slot + 1.0 / rate
        return slot - now

    async def hold(self, sender: str, seconds: float) -> None:
        now = time.monotonic()
        self._next[sender] = max(self._next.get(sender, now), now + seconds)


class RedisPacer(Pacer):
    def __init__(self, url: str, prefix: str = "concierge:pace") -> None:
        import redis.asyncio as aioredis

        self.redis = aioredis.from_url(url)
        self.prefix = prefix
        self._script = self.redis.register_script(_GCRA_LUA)

    async def reserve(self, sender: str, rate: float) -> float:
        micros = await self._script(keys=[f"{self.prefix}:{sender}"], args=[1000.0 / rate, 0])
        return int(micros) / 1_000_000

    async def hold(self, sender: str, seconds: float) -> None:
        await self._script(keys=[f"{self.prefix}:{sender}"], args=[0, seconds * 1000.0])

    async def close(self) -> None:
        await self.redis.aclose()
