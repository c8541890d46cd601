"""Quotas shared by two replicas through one PostgreSQL (`--database-url`): two servers in
process on the fake engine (the counting is the server's own). A tenant's requests a minute
are counted across both, with the headers counting down from one replica to the next; tokens
used on one are seen by the other once written; with the database stopped both keep serving,
each counting on its own, and the shared count is back when the database is."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from openai import OpenAI

from lingshu_server.core.errors import QuotaExceededError
from lingshu_server.core.quotas import TenantQuota
from lingshu_server.storage.database import Database
from lingshu_server.storage.quota_counter import DatabaseQuotaCounter
from tests.utils.batches import chat_body, request_line, upload
from tests.utils.errors import assert_openai_error
from tests.utils.in_process import InProcessServer, start_fake_server
from tests.utils.postgres import PostgresServer

KEYS = {
    "pathology": "sk-pathology-31f0",
    "cardiology": "sk-cardiology-8a2d",
    "oncology": "sk-oncology-c47e",
    "radiology": "sk-radiology-5b19",
}
QUOTAS = {
    "pathology": {"requests_per_minute": 4},
    "cardiology": {"tokens_per_minute": 60},
    "oncology": {"tokens_per_minute": 60},
    "radiology": {"tokens_per_minute": 60},
}
CHAT = {"model": "lingshu-demo", "messages": [{"role": "user", "content": "Findings?"}]}
# a tokens-a-minute quota of 60 refills one token a second: an answer of this many tokens
# leaves the tenant over it for longer than any test here takes
LONG_ANSWER = 120


@pytest.fixture(scope="module")
def replicas(postgres: PostgresServer, tmp_path_factory) -> Iterator[list[InProcessServer]]:
    url = postgres.create_database("shared_quotas")
    keys = ",".join(f"{key} tenant={tenant}" for tenant, key in KEYS.items())
    servers: list[InProcessServer] = []
    try:
        for name in ("a", "b"):
            folder = tmp_path_factory.mktemp(f"replica-{name}")
            servers.append(
                start_fake_server(
                    folder / "server.log",
                    "--database-url",
                    url,
                    "--api-keys",
                    keys,
                    "--tenant-quotas",
                    json.dumps(QUOTAS),
                )
            )
        yield servers
    finally:
        for server in servers:
            server.stop()


def chat(server: InProcessServer, tenant: str, max_tokens: int = 2) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={**CHAT, "max_tokens": max_tokens},
        headers={"Authorization": f"Bearer {KEYS[tenant]}"},
        timeout=30,
    )


def models(server: InProcessServer, tenant: str) -> httpx.Response:
    """An API request that uses no tokens: admitted or refused on what the tenant has used."""
    return httpx.get(
        f"{server.base_url}/v1/models",
        headers={"Authorization": f"Bearer {KEYS[tenant]}"},
        timeout=30,
    )


def eventually(answer: Callable[[], httpx.Response], status: int, within_s: float = 10) -> None:
    deadline = time.monotonic() + within_s
    while (got := answer()).status_code != status:
        assert time.monotonic() < deadline, f"still {got.status_code}: {got.text}"
        time.sleep(0.1)


def test_requests_per_minute_are_counted_across_replicas(replicas):
    a, b = replicas
    answers = [chat(server, "pathology") for server in (a, b, a, b)]
    assert [answer.status_code for answer in answers] == [200] * 4
    # one count: each replica's answer takes up where the other's left off
    assert [answer.headers["x-ratelimit-remaining-requests"] for answer in answers] == [
        "3",
        "2",
        "1",
        "0",
    ]
    for server in (a, b):
        over = chat(server, "pathology")
        error = assert_openai_error(over, 429, code="quota_exceeded")
        assert "4 requests per minute" in error["message"]
        assert over.headers["x-ratelimit-limit-requests"] == "4"
        assert over.headers["x-ratelimit-remaining-requests"] == "0"
        assert 1 <= int(over.headers["retry-after"]) <= 16


def test_tokens_used_on_one_replica_are_counted_on_the_other(replicas):
    a, b = replicas
    assert models(b, "cardiology").headers["x-ratelimit-remaining-tokens"] == "60"
    assert chat(a, "cardiology", max_tokens=LONG_ANSWER).status_code == 200
    # written within a flush interval: the other replica refuses the tenant too
    eventually(lambda: models(b, "cardiology"), 429)
    over = chat(b, "cardiology")
    assert "60 tokens per minute" in assert_openai_error(over, 429)["message"]
    assert over.headers["x-ratelimit-remaining-tokens"] == "0"


def test_with_the_database_stopped_each_replica_counts_alone_until_it_is_back(
    replicas, postgres: PostgresServer
):
    a, b = replicas
    assert chat(a, "oncology", max_tokens=LONG_ANSWER).status_code == 200
    eventually(lambda: models(b, "oncology"), 429)  # over its quota, on both replicas
    postgres.stop()
    try:
        # fail open: served, each replica counting in its own memory (where the tenant has
        # used nothing yet)
        for server in (a, b):
            answer = chat(server, "oncology", max_tokens=1)
            assert answer.status_code == 200, answer.text
            assert int(answer.headers["x-ratelimit-remaining-tokens"]) > 0
            assert models(server, "oncology").status_code == 200
        assert httpx.get(f"{a.base_url}/health", timeout=30).json()["database"] != "ok"
        # said once per replica (both in-process servers log to this process's root logger)
        assert a.log_text().count("quotas counted in this replica") == 2
    finally:
        postgres.start()
    # the shared count again: the tenant is over the quota it used before the outage
    for server in (a, b):
        eventually(lambda server=server: models(server, "oncology"), 429)
    assert a.log_text().count("quotas shared again") == 2


def test_admissions_from_two_counters_at_once_take_each_request_once(postgres: PostgresServer):
    url = postgres.create_database("racing_quotas")
    quota = TenantQuota(requests_per_minute=10)

    async def race() -> list[int]:
        databases = [Database(url), Database(url)]
        counters = [DatabaseQuotaCounter(database) for database in databases]

        async def admit(counter: DatabaseQuotaCounter) -> int | None:
            try:
                return (await counter.admit("radiology", quota)).requests.remaining
            except QuotaExceededError:
                return None

        try:
            answers = await asyncio.gather(*(admit(counters[i % 2]) for i in range(16)))
        finally:
            for database in databases:
                await database.close()
        return sorted(left for left in answers if left is not None)

    # ten admitted, each with its own place in the count; six refused
    assert asyncio.run(race()) == list(range(10))


def test_a_batchs_lines_count_against_its_tenants_token_quota(replicas):
    a, b = replicas
    sdk = OpenAI(base_url=f"{a.base_url}/v1", api_key=KEYS["radiology"], max_retries=0)
    lines = [request_line("long", chat_body("Findings?", max_tokens=LONG_ANSWER))]
    sdk.batches.create(
        input_file_id=upload(sdk, lines),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    # the line's answer, run by whichever replica took the batch, is the tenant's usage
    for server in (a, b):
        eventually(lambda server=server: models(server, "radiology"), 429)
