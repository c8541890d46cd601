"""The quota counter alone, on a clock the test moves: buckets refill continuously, a day's
quota over a day, tokens may overdraw a bucket, and the reset times read as OpenAI writes them."""

from __future__ import annotations

import asyncio

import pytest

from lingshu_server.core.errors import QuotaExceededError
from lingshu_server.core.quotas import LocalQuotaCounter, TenantQuota, duration_text


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_refill_a_minutes_quota_over_a_minute():
    clock = Clock()
    counter = LocalQuotaCounter(clock=clock)
    quota = TenantQuota(requests_per_minute=60)
    for left in range(59, -1, -1):
        state = asyncio.run(counter.admit("radiology", quota))
        counter.release("radiology")
        assert state.requests.remaining == left
    with pytest.raises(QuotaExceededError) as refused:
        asyncio.run(counter.admit("radiology", quota))
    assert refused.value.headers["Retry-After"] == "1"
    assert refused.value.headers["x-ratelimit-reset-requests"] == "1m0s"
    clock.now += 1.0  # one request's worth
    assert asyncio.run(counter.admit("radiology", quota)).requests.remaining == 0
    asyncio.run(counter.admit("cardiology", quota))  # another tenant has its own


def test_tokens_overdraw_then_wait_for_the_day_quota():
    clock = Clock()
    counter = LocalQuotaCounter(clock=clock)
    quota = TenantQuota(tokens_per_day=8640)  # 0.1 token a second
    asyncio.run(counter.admit("radiology", quota))
    counter.charge("radiology", quota, 8640 + 100)  # a long answer goes past the quota
    with pytest.raises(QuotaExceededError) as refused:
        asyncio.run(counter.admit("radiology", quota))
    assert "tokens per day" in refused.value.message
    assert int(refused.value.headers["Retry-After"]) == 1010  # back above zero, plus one token
    clock.now += 1010
    asyncio.run(counter.admit("radiology", quota))


def test_concurrency_is_released():
    counter = LocalQuotaCounter(clock=Clock())
    quota = TenantQuota(concurrent_requests=1)
    asyncio.run(counter.admit("radiology", quota))
    with pytest.raises(QuotaExceededError):
        asyncio.run(counter.admit("radiology", quota))
    counter.release("radiology")
    asyncio.run(counter.admit("radiology", quota))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0123, "13ms"), (1.0, "1s"), (59.2, "1m0s"), (360, "6m0s"), (3723, "1h2m3s")],
)
def test_reset_times_as_openai_writes_them(seconds, text):
    assert duration_text(seconds) == text
