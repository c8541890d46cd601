"""Per-tenant quotas at the HTTP edge (the fake engine: the counting is the server's own):
requests a minute under concurrent load with OpenAI's headers counting down, tokens a minute
counted as they are used, requests at once; a key and a token of the same tenant share its
quota, and one tenant's use leaves another's alone."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.identity.conftest import RADIOLOGY_KEY
from tests.identity.test_tokens import CHAT, bearer, chat
from tests.utils.errors import assert_openai_error
from tests.utils.in_process_care import slow_steps

# An OpenID provider (Node) and a server on the fake engine, a few seconds in one group: in the full
# suite beside the engine tests, not in the fast tier.
pytestmark = [pytest.mark.e2e, pytest.mark.beside_engine]

HEADERS = ("limit", "remaining", "reset")


async def _concurrently(base_url: str, token: str, count: int) -> list[httpx.Response]:
    body = {**CHAT, "max_tokens": 1}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        return await asyncio.gather(
            *(
                http.post("/v1/chat/completions", json=body, headers=bearer(token))
                for _ in range(count)
            )
        )


def test_requests_per_minute_under_concurrent_load_count_down_then_429(guarded, provider):
    token = provider.token("pathology-app")  # 5 requests a minute
    answers = asyncio.run(_concurrently(guarded.base_url, token, 8))
    ok = [a for a in answers if a.status_code == 200]
    limited = [a for a in answers if a.status_code == 429]
    assert len(ok) == 5 and len(limited) == 3
    remaining = sorted(int(a.headers["x-ratelimit-remaining-requests"]) for a in ok)
    assert remaining == [0, 1, 2, 3, 4]
    for answer in answers:
        assert answer.headers["x-ratelimit-limit-requests"] == "5"
        assert answer.headers["x-ratelimit-reset-requests"].endswith("s")
    error = assert_openai_error(limited[0], 429, code="quota_exceeded")
    assert "5 requests per minute" in error["message"]
    assert 1 <= int(limited[0].headers["retry-after"]) <= 12
    assert limited[0].headers["x-ratelimit-remaining-requests"] == "0"
    # another tenant is not touched; an unlisted tenant has no quota (no headers)
    other = chat(guarded, provider.token("cardiology-app"))
    assert other.status_code == 200
    assert "x-ratelimit-remaining-tokens" in other.headers
    assert "x-ratelimit-limit-requests" not in chat(guarded, provider.token("prometheus")).headers


def test_tokens_per_minute_are_counted_as_used(guarded, provider):
    token = provider.token("cardiology-app")  # 200 tokens a minute
    first = chat(guarded, token, max_tokens=3)
    assert first.status_code == 200
    limit = int(first.headers["x-ratelimit-limit-tokens"])
    assert limit == 200
    usage = first.json()["usage"]
    spent = usage["prompt_tokens"] + usage["completion_tokens"]
    second = chat(guarded, token, max_tokens=3)
    # the first request's tokens are gone from what the second one is told
    assert int(second.headers["x-ratelimit-remaining-tokens"]) <= limit - spent
    # a long stream spends the rest: the next request waits for the bucket to refill
    with httpx.stream(
        "POST",
        f"{guarded.base_url}/v1/chat/completions",
        json={**CHAT, "max_tokens": 200, "stream": True},
        headers=bearer(token),
        timeout=30,
    ) as stream:
        assert stream.status_code == 200
        assert "x-ratelimit-remaining-tokens" in stream.headers
        for _ in stream.iter_lines():
            pass
    over = chat(guarded, token)
    error = assert_openai_error(over, 429, code="quota_exceeded")
    assert "tokens per minute" in error["message"]
    assert over.headers["x-ratelimit-remaining-tokens"] == "0"
    assert int(over.headers["retry-after"]) >= 1


def test_concurrent_requests_per_tenant_and_a_key_shares_its_tenants_quota(guarded, provider):
    token = provider.token("radiology-app")  # radiology: 2 requests at once; the key too

    async def three_at_once() -> list[httpx.Response]:
        body = {**CHAT, "max_tokens": 20}
        async with httpx.AsyncClient(base_url=guarded.base_url, timeout=30) as http:
            return await asyncio.gather(
                http.post("/v1/chat/completions", json=body, headers=bearer(token)),
                http.post("/v1/chat/completions", json=body, headers=bearer(token)),
                http.post("/v1/chat/completions", json=body, headers=bearer(RADIOLOGY_KEY)),
            )

    with slow_steps(guarded, 0.02):
        answers = asyncio.run(three_at_once())
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200, 429]
    refused = next(a for a in answers if a.status_code == 429)
    assert "2 concurrent requests" in refused.json()["error"]["message"]
    assert chat(guarded, RADIOLOGY_KEY).status_code == 200  # the slots are free again
