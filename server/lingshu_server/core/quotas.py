"""Per-tenant quotas: requests and tokens a minute, tokens a day, requests at once.

Each rate is a token bucket (full at the start, refilled continuously, as OpenAI's limits
behave), so `remaining` and `reset` in OpenAI's `x-ratelimit-*` headers read straight off it.
Tokens are charged as they are used (the prompt once it is built, completion tokens step by
step), so a bucket may go below zero: the tenant's next request then waits until it refills.

`QuotaCounter` is the one interface the HTTP layer uses. `Buckets` holds the arithmetic (refill,
the refusal rules and their messages, the headers' numbers) for whichever counter keeps the
levels: `LocalQuotaCounter` in this replica's memory, storage's `DatabaseQuotaCounter` in the
stored-state database, shared by every replica. Requests at once (`Slots`) are always counted
in the replica that serves them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from lingshu_server.core.errors import QuotaExceededError

SECONDS_PER_DAY = 86400.0
RATE_LIMIT_HEADERS = tuple(
    f"x-ratelimit-{what}-{kind}"
    for kind in ("requests", "tokens")
    for what in ("limit", "remaining", "reset")
)
# The rates a quota may set, by their TenantQuota field (the name a stored bucket has), and
# the period each refills over.
RATES = (
    ("requests_per_minute", 60.0),
    ("tokens_per_minute", 60.0),
    ("tokens_per_day", SECONDS_PER_DAY),
)
TOKEN_RATES = ("tokens_per_minute", "tokens_per_day")


class TenantQuota(BaseModel):
    """One tenant's limits; any left out is unlimited."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1)
    concurrent_requests: int | None = Field(default=None, ge=1)

    def rates(self) -> Iterator[tuple[str, int, float]]:
        """The rates this quota sets: (name, capacity, period in seconds)."""
        for name, period_s in RATES:
            capacity = getattr(self, name)
            if capacity is not None:
                yield name, capacity, period_s


@dataclass
class Bucket:
    """`capacity` units, refilled at `capacity / period_s` a second; `level` may be negative."""

    capacity: float
    period_s: float
    level: float
    updated: float

    @property
    def rate(self) -> float:
        return self.capacity / self.period_s

    def refill(self, now: float) -> None:
        # A clock behind `updated` (another replica's wall clock, a little ahead) adds nothing.
        elapsed = max(0.0, now - self.updated)
        self.level = min(self.capacity, self.level + elapsed * self.rate)
        self.updated = max(self.updated, now)

    def seconds_until(self, level: float) -> float:
        """Seconds until the bucket holds `level` (0 if it does)."""
        return max(0.0, (level - self.level) / self.rate)


@dataclass(frozen=True)
class Window:
    """What the headers say about one limit: its size, what is left, seconds until full."""

    limit: int
    remaining: int
    reset_s: float


@dataclass(frozen=True)
class QuotaState:
    requests: Window | None
    tokens: Window | None


def _window(bucket: Bucket | None) -> Window | None:
    if bucket is None:
        return None
    remaining = max(0, math.floor(bucket.level))
    return Window(int(bucket.capacity), remaining, bucket.seconds_until(bucket.capacity))


@dataclass
class Buckets:
    """One subject's buckets, by rate name (those its quota sets): the counting every counter
    shares."""

    quota: TenantQuota
    rates: dict[str, Bucket]

    @classmethod
    def restore(
        cls,
        quota: TenantQuota,
        now: float,
        stored: Mapping[str, tuple[float, float]] | None = None,
    ) -> Buckets:
        """The quota's buckets as `stored` left them (rate name -> level, updated), refilled
        to `now`; full where nothing is stored. The capacity is always the quota's own."""
        rates: dict[str, Bucket] = {}
        for name, capacity, period_s in quota.rates():
            level, updated = (stored or {}).get(name, (float(capacity), now))
            bucket = Bucket(float(capacity), period_s, level, updated)
            bucket.refill(now)
            rates[name] = bucket
        return cls(quota, rates)

    def refill(self, now: float) -> None:
        for bucket in self.rates.values():
            bucket.refill(now)

    def admit(self, *, slot_free: bool) -> QuotaState:
        """Take one request, or raise QuotaExceededError naming the first limit it is over
        (`slot_free`: the subject's requests at once leave room for it)."""
        quota = self.quota
        if not slot_free:
            self._refuse(f"{quota.concurrent_requests} concurrent requests", 1.0)
        requests = self.rates.get("requests_per_minute")
        if requests is not None and requests.level < 1:
            wait_s = requests.seconds_until(1)
            self._refuse(f"{quota.requests_per_minute} requests per minute", wait_s)
        for name in TOKEN_RATES:
            bucket = self.rates.get(name)
            if bucket is not None and bucket.level <= 0:
                # a token's worth above zero: one more request may start
                limit = f"{getattr(quota, name)} {name.replace('_', ' ')}"
                self._refuse(limit, bucket.seconds_until(min(1.0, bucket.capacity)))
        if requests is not None:
            requests.level -= 1
        return self.state()

    def charge(self, tokens: int) -> None:
        """`tokens` used (prompt or completion): off every token bucket, below zero if need be."""
        for name in TOKEN_RATES:
            bucket = self.rates.get(name)
            if bucket is not None:
                bucket.level -= tokens

    def state(self) -> QuotaState:
        return QuotaState(
            _window(self.rates.get("requests_per_minute")),
            _window(self.rates.get("tokens_per_minute")),
        )

    def _refuse(self, limit: str, wait_s: float) -> None:
        raise QuotaExceededError(
            f"this tenant's quota of {limit} is used up; retry after the time in Retry-After",
            retry_after_s=max(1, math.ceil(wait_s)),
            rate_limit_headers=rate_limit_headers(self.state()),
        )


@dataclass
class Slots:
    """Requests in flight per subject, counted in this replica only: a replica that crashes
    takes its slots with it instead of holding them in a shared count."""

    _in_flight: dict[str, int] = field(default_factory=dict)

    def take(self, subject: str, quota: TenantQuota) -> bool:
        """Take a slot; False (none taken) when all of the subject's are in use."""
        in_flight = self._in_flight.get(subject, 0)
        limit = quota.concurrent_requests
        if limit is not None and in_flight >= limit:
            return False
        self._in_flight[subject] = in_flight + 1
        return True

    def release(self, subject: str) -> None:
        in_flight = self._in_flight.pop(subject, 0)
        if in_flight > 1:
            self._in_flight[subject] = in_flight - 1


class QuotaCounter(Protocol):
    async def admit(self, subject: str, quota: TenantQuota) -> QuotaState:
        """Take one request for `subject` (a tenant), or raise QuotaExceededError."""
        ...

    def charge(self, subject: str, quota: TenantQuota, tokens: int) -> None:
        """Count `tokens` used (prompt or completion) against `subject`'s token limits; called
        as tokens are produced, so it never waits."""
        ...

    def release(self, subject: str) -> None:
        """One of `subject`'s requests has finished (its concurrency slot is free)."""
        ...


@dataclass
class LocalQuotaCounter:
    """Quotas counted in this replica's memory (each replica allows the full quota)."""

    clock: Callable[[], float] = time.monotonic
    slots: Slots = field(default_factory=Slots)
    _buckets: dict[str, Buckets] = field(default_factory=dict)

    def _subject(self, subject: str, quota: TenantQuota) -> Buckets:
        now = self.clock()
        buckets = self._buckets.get(subject)
        if buckets is None:
            buckets = self._buckets[subject] = Buckets.restore(quota, now)
        else:
            buckets.refill(now)
        return buckets

    async def admit(self, subject: str, quota: TenantQuota) -> QuotaState:
        return self.admit_now(subject, quota)

    def admit_now(self, subject: str, quota: TenantQuota) -> QuotaState:
        """`admit` without waiting (a shared counter's fallback while its database is away)."""
        slot_free = self.slots.take(subject, quota)
        try:
            return self._subject(subject, quota).admit(slot_free=slot_free)
        except QuotaExceededError:
            if slot_free:
                self.slots.release(subject)
            raise

    def charge(self, subject: str, quota: TenantQuota, tokens: int) -> None:
        if tokens > 0:
            self._subject(subject, quota).charge(tokens)

    def release(self, subject: str) -> None:
        self.slots.release(subject)


def duration_text(seconds: float) -> str:
    """A reset time as OpenAI writes it: `250ms`, `1s`, `6m0s`, `1h2m3s`."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rate_limit_headers(state: QuotaState) -> dict[str, str]:
    """OpenAI's `x-ratelimit-*` headers for the limits a tenant has."""
    headers: dict[str, str] = {}
    for name, window in (("requests", state.requests), ("tokens", state.tokens)):
        if window is not None:
            headers[f"x-ratelimit-limit-{name}"] = str(window.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(window.remaining)
            headers[f"x-ratelimit-reset-{name}"] = duration_text(window.reset_s)
    return headers
