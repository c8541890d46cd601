"""Two replicas (two server processes) on one PostgreSQL: started at once on a new database, both
come up and the schema is migrated once, under the migration lock (without it, the second
replica's CREATE TABLE fails on the first's); then one chain served by the two in turn, each
turn reading the earlier ones the other replica stored."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from lingshu_server.storage.migrate import head_revision
from tests.utils.errors import assert_openai_error
from tests.utils.fake_process import Launcher, wait_healthy
from tests.utils.images import image_data_url
from tests.utils.postgres import PostgresServer
from tests.utils.server import RunningServer
from tests.utils.stored_databases import PostgresState, dsn_of
from tests.utils.stored_responses import (
    RESPONSES,
    answer_text,
    resent_in_full,
    turn_body,
    user_turn,
)

pytestmark = [pytest.mark.e2e, pytest.mark.beside_engine]

DATABASE = "replicas"
TABLES = {"alembic_version", "blobs", "blob_refs", "responses", "conversations"}


@pytest.fixture(scope="module")
def replicas(
    launcher: Launcher, postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[RunningServer]]:
    """Two replicas started at the same moment on a database nobody migrated yet."""
    url = postgres.create_database(DATABASE)
    folder = tmp_path_factory.mktemp("replicas")
    args = ("--store-responses", "--database-url", url)
    started = launcher.start_together([(folder / f"{name}.log", args) for name in "ab"], wait=False)
    try:
        yield started
    finally:
        for replica in started:
            replica.process.kill()


def test_two_replicas_starting_at_once_both_serve_and_migrate_once(
    replicas: list[RunningServer], postgres: PostgresServer
) -> None:
    for replica in replicas:
        wait_healthy(replica)  # neither failed on the other's migration
        assert httpx.get(f"{replica.base_url}/health").json()["database"] == "ok"
    state = PostgresState(dsn_of(postgres.url_for(DATABASE)))
    assert state.rows("SELECT version_num FROM alembic_version") == [(head_revision(),)]
    tables = state.rows("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert TABLES <= {name for (name,) in tables}


def test_one_chain_served_by_two_replicas_in_turn(replicas: list[RunningServer]) -> None:
    for replica in replicas:
        wait_healthy(replica)
    turns = [user_turn("Findings?", image_data_url(56, 56, seed=11))] + [
        user_turn(f"And question {t}?") for t in range(1, 6)
    ]
    answers: list[dict[str, Any]] = []
    clients = [httpx.Client(base_url=r.base_url, timeout=60) for r in replicas]
    try:
        for number, turn in enumerate(turns):
            here, other = clients[number % 2], clients[(number + 1) % 2]
            previous = answers[-1]["id"] if answers else None
            answer = here.post(RESPONSES, json=turn_body(turn, previous))
            assert answer.status_code == 200, answer.text
            answers.append(answer.json())
            # the other replica reads it at once
            assert other.get(f"{RESPONSES}/{answers[-1]['id']}").json() == answers[-1]
        # the last answer is the one to the whole conversation, every turn included
        resent = clients[0].post(RESPONSES, json=resent_in_full(turns, answers[:-1]))
        assert answer_text(resent.json()) == answer_text(answers[-1])
        # deleted on one replica, gone on both
        assert clients[1].delete(f"{RESPONSES}/{answers[2]['id']}").json()["deleted"] is True
        for client in clients:
            assert_openai_error(client.get(f"{RESPONSES}/{answers[2]['id']}"), 404)
    finally:
        for client in clients:
            client.close()
