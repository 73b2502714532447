"""The shared ledger: Redis, with reserve and settle as server-side Lua scripts.

Each script checks and moves every counter of one reservation in one atomic step on the
server, so any number of sidecars share one budget exactly. Every key carries the same
hash tag (`{<prefix>}`), so all keys a script touches live in one slot and the same
scripts run unchanged on Redis Cluster; each script names every key it touches in KEYS.

    {p}:c:<budget>@<window>   hash spent, reserved (micro-dollars); expires after its window
    {p}:r:<reservation>       hash amount, keys (newline-separated), expires_at
    {p}:expiry                sorted set of reservations by expires_at, for the sweep

A sidecar that dies leaves its reservations behind; any sidecar's sweep settles them at
their full amount once they expire.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sidecar.budget.ledger import Hold, Refusal, StoreUnavailable, Usage

# A counter outlives its window by this long, for late settlements and reports.
_KEEP_AFTER_WINDOW = 7 * 86400
_SWEEP_BATCH = 100

_RESERVE = """
local n = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[n + 1]) == 1 then return {0, '', 0, 0} end
for i = 1, n do
  local v = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  local spent = tonumber(v[1] or '0')
  local reserved = tonumber(v[2] or '0')
  if spent + reserved + amount > tonumber(ARGV[4 + i]) then
    return {i, KEYS[i], spent, reserved}
  end
end
local names = {}
for i = 1, n do
  redis.call('HINCRBY', KEYS[i], 'reserved', amount)
  local keep = tonumber(ARGV[4 + n + i])
  if keep > 0 then redis.call('EXPIREAT', KEYS[i], keep) end
  names[i] = KEYS[i]
end
redis.call('HSET', KEYS[n + 1], 'amount', amount, 'keys', table.concat(names, '\\n'),
           'expires_at', ARGV[3])
redis.call('ZADD', KEYS[n + 2], ARGV[3], ARGV[4])
return {0, '', 0, 0}
"""

_SETTLE = """
local n = tonumber(ARGV[1])
local amount = redis.call('HGET', KEYS[n + 1], 'amount')
if not amount then return 0 end
amount = tonumber(amount)
local actual = tonumber(ARGV[2])
for i = 1, n do
  redis.call('HINCRBY', KEYS[i], 'reserved', -amount)
  redis.call('HINCRBY', KEYS[i], 'spent', actual)
end
redis.call('DEL', KEYS[n + 1])
redis.call('ZREM', KEYS[n + 2], ARGV[3])
return 1
"""


class RedisLedger:
    def __init__(self, url: str, prefix: str, *, timeout: float = 1.0) -> None:
        self._tag = "{" + prefix + "}"
        # Short timeouts: a cloud call waits on the ledger, and a ledger that does not answer
        # must fail the call closed quickly rather than hold it.
        self._client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry_on_timeout=False,
        )
        self._reserve = self._client.register_script(_RESERVE)
        self._settle = self._client.register_script(_SETTLE)

    @property
    def tag(self) -> str:
        return self._tag

    def counter_key(self, key: str) -> str:
        return f"{self._tag}:c:{key}"

    def _reservation_key(self, reservation: str) -> str:
        return f"{self._tag}:r:{reservation}"

    @property
    def _expiry(self) -> str:
        return f"{self._tag}:expiry"

    async def start(self) -> None:
        return None  # connected lazily: Redis may come up after the sidecar

    async def reserve(
        self, reservation: str, holds: Sequence[Hold], amount: int, expires_at: float
    ) -> Refusal | None:
        keys = [self.counter_key(h.key) for h in holds]
        keys += [self._reservation_key(reservation), self._expiry]
        args: list[Any] = [len(holds), amount, repr(expires_at), reservation]
        args += [h.cap for h in holds]
        args += [0 if h.expires_at is None else h.expires_at + _KEEP_AFTER_WINDOW for h in holds]
        answer = await self._call(self._reserve, keys, args)
        index = int(answer[0])
        if index == 0:
            return None
        return Refusal(holds[index - 1].key, int(answer[2]), int(answer[3]))

    async def settle(self, reservation: str, keys: Sequence[str], actual: int) -> bool:
        names = [self.counter_key(k) for k in keys]
        names += [self._reservation_key(reservation), self._expiry]
        done = await self._call(self._settle, names, [len(keys), actual, reservation])
        return bool(done)

    async def usage(self, keys: Sequence[str]) -> Mapping[str, Usage]:
        wanted = list(dict.fromkeys(keys))
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in wanted:
                    pipe.hmget(self.counter_key(key), "spent", "reserved")
                answers = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc
        return {
            key: Usage(int(spent or 0), int(reserved or 0))
            for key, (spent, reserved) in zip(wanted, answers, strict=True)
            if spent is not None or reserved is not None
        }

    async def expire(self, now: float) -> int:
        try:
            due = await self._client.zrangebyscore(self._expiry, "-inf", now, 0, _SWEEP_BATCH)
            done = 0
            for raw in due:
                reservation = raw.decode() if isinstance(raw, bytes) else str(raw)
                record = await self._client.hmget(
                    self._reservation_key(reservation), "amount", "keys"
                )
                amount, keys = record
                if amount is None:
                    await self._client.zrem(self._expiry, reservation)
                    continue
                # The record names the counters by their full keys; settle takes plain ones.
                plain = [k.removeprefix(f"{self._tag}:c:") for k in _split(keys)]
                done += await self.settle(reservation, plain, int(amount))
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc
        return done

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc

    async def aclose(self) -> None:
        await self._client.aclose()


def _split(raw: bytes | str | None) -> list[str]:
    if raw is None:
        return []
    text = raw.decode() if isinstance(raw, bytes) else raw
    return [part for part in text.split("\n") if part]


def _unavailable(exc: BaseException) -> StoreUnavailable:
    # The library's text may carry the address and password of the URL: name the kind only.
    return StoreUnavailable(f"the Redis ledger did not answer ({type(exc).__name__})")
