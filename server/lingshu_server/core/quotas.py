"""Per-tenant quotas: requests and tokens a minute, tokens a day, requests at once.

Each rate is a token bucket (full at the start, refilled continuously, as OpenAI's limits
behave), so `remaining` and `reset` in OpenAI's `x-ratelimit-*` headers read straight off it.
Tokens are charged as they are used (the prompt once it is built, completion tokens step by
step), so a bucket may go below zero: the tenant's next request then waits until it refills.

`QuotaCounter` is the one interface the HTTP layer uses; `LocalQuotaCounter` keeps the counts in
this replica's memory. A counter shared by every replica (the stored-state database) implements
the same interface.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
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


class TenantQuota(BaseModel):
    """One tenant's limits; any left out is unlimited."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1)
    concurrent_requests: int | None = Field(default=None, ge=1)


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
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

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


@dataclass
class _Tenant:
    requests: Bucket | None
    tokens_minute: Bucket | None
    tokens_day: Bucket | None
    in_flight: int = 0


def _bucket(capacity: int | None, period_s: float, now: float) -> Bucket | None:
    return None if capacity is None else Bucket(float(capacity), period_s, float(capacity), now)


def _window(bucket: Bucket | None) -> Window | None:
    if bucket is None:
        return None
    remaining = max(0, math.floor(bucket.level))
    return Window(int(bucket.capacity), remaining, bucket.seconds_until(bucket.capacity))


class QuotaCounter(Protocol):
    async def admit(self, subject: str, quota: TenantQuota) -> QuotaState:
        """Take one request for `subject` (a tenant), or raise QuotaExceededError."""
        ...

    def charge(self, subject: str, quota: TenantQuota, tokens: int) -> None:
        """Count `tokens` used (prompt or completion) against `subject`'s token limits."""
        ...

    def release(self, subject: str) -> None:
        """One of `subject`'s requests has finished (its concurrency slot is free)."""
        ...


@dataclass
class LocalQuotaCounter:
    """Quotas counted in this replica's memory (each replica allows the full quota)."""

    clock: Callable[[], float] = time.monotonic
    _tenants: dict[str, _Tenant] = field(default_factory=dict)

    def _tenant(self, subject: str, quota: TenantQuota) -> _Tenant:
        now = self.clock()
        tenant = self._tenants.get(subject)
        if tenant is None:
            tenant = _Tenant(
                _bucket(quota.requests_per_minute, 60.0, now),
                _bucket(quota.tokens_per_minute, 60.0, now),
                _bucket(quota.tokens_per_day, SECONDS_PER_DAY, now),
            )
            self._tenants[subject] = tenant
        for bucket in (tenant.requests, tenant.tokens_minute, tenant.tokens_day):
            if bucket is not None:
                bucket.refill(now)
        return tenant

    async def admit(self, subject: str, quota: TenantQuota) -> QuotaState:
        tenant = self._tenant(subject, quota)
        concurrent = quota.concurrent_requests
        if concurrent is not None and tenant.in_flight >= concurrent:
            self._refuse(tenant, f"{concurrent} concurrent requests", 1.0)
        if tenant.requests is not None and tenant.requests.level < 1:
            wait = tenant.requests.seconds_until(1)
            self._refuse(tenant, f"{quota.requests_per_minute} requests per minute", wait)
        for bucket, name in (
            (tenant.tokens_minute, f"{quota.tokens_per_minute} tokens per minute"),
            (tenant.tokens_day, f"{quota.tokens_per_day} tokens per day"),
        ):
            if bucket is not None and bucket.level <= 0:
                # a token's worth above zero: one more request may start
                self._refuse(tenant, name, bucket.seconds_until(min(1.0, bucket.capacity)))
        if tenant.requests is not None:
            tenant.requests.level -= 1
        tenant.in_flight += 1
        return self._state(tenant)

    def charge(self, subject: str, quota: TenantQuota, tokens: int) -> None:
        if tokens <= 0:
            return
        tenant = self._tenant(subject, quota)
        for bucket in (tenant.tokens_minute, tenant.tokens_day):
            if bucket is not None:
                bucket.level -= tokens

    def release(self, subject: str) -> None:
        tenant = self._tenants.get(subject)
        if tenant is not None and tenant.in_flight > 0:
            tenant.in_flight -= 1

    @staticmethod
    def _state(tenant: _Tenant) -> QuotaState:
        return QuotaState(_window(tenant.requests), _window(tenant.tokens_minute))

    def _refuse(self, tenant: _Tenant, limit: str, wait_s: float) -> None:
        raise QuotaExceededError(
            f"this tenant's quota of {limit} is used up; retry after the time in Retry-After",
            retry_after_s=max(1, math.ceil(wait_s)),
            rate_limit_headers=rate_limit_headers(self._state(tenant)),
        )


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
