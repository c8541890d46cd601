"""Batches that outlive their server: killed (-9) at random points while its lines run, the
server started again on the same database goes on where the batch was, and each `custom_id`
is written exactly once across the output and error files; on SQLite and on PostgreSQL. With
two replicas on one PostgreSQL, one runs the batch (a lease), and when it dies the other takes
the batch over once the lease runs out.

Servers in processes of their own on the fake engine (slowed, so lines stay in flight): what is
tested is the server's own storage and leases, not what the engine answers."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from openai import OpenAI

from tests.utils.batches import chat_body, outcomes, request_line, upload, wait_for
from tests.utils.fake_process import Launcher, wait_healthy
from tests.utils.postgres import PostgresServer
from tests.utils.server import RunningServer
from tests.utils.stored_databases import PostgresState, dsn_of
from tests.utils.waiting import wait_for as wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.beside_engine]

LINES = 24
LEASE = ("--batch-lease-s", "1.5", "--batch-max-in-flight", "3")
STEP_S = 0.02  # a line of 6 tokens takes about 0.12 s


def sdk(server: RunningServer) -> OpenAI:
    return OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=2, timeout=30)


def study_lines() -> list[dict]:
    return [
        request_line(f"study-{i}", chat_body(f"Study {i}?", max_tokens=6)) for i in range(LINES)
    ]


def assert_each_line_once(client: OpenAI, batch_id: str) -> None:
    batch = wait_for(client, batch_id, timeout=60)
    assert batch.status == "completed", batch
    found = outcomes(client, batch)
    assert sorted(found) == sorted(f"study-{i}" for i in range(LINES))
    assert all(len(lines) == 1 for lines in found.values()), {
        cid: len(lines) for cid, lines in found.items() if len(lines) > 1
    }
    counts = batch.request_counts
    assert (counts.total, counts.completed + counts.failed) == (LINES, LINES)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_batch_killed_at_random_points_resumes_and_writes_each_line_once(
    kind: str, launcher: Launcher, postgres: PostgresServer, tmp_path: Path
):
    if kind == "sqlite":
        place: tuple[str, ...] = ("--state-dir", str(tmp_path / "state"))
    else:
        place = ("--database-url", postgres.create_database("batch_resume"))

    def start(number: int) -> RunningServer:
        log = tmp_path / f"server-{number}.log"
        return launcher.start(log, *place, *LEASE, step_delay_s=STEP_S)

    server = start(0)
    batch = sdk(server).batches.create(
        input_file_id=upload(sdk(server), study_lines()),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    rng = random.Random(25)
    for number in range(1, 3):
        client = sdk(server)
        wait_for(client, batch.id, ("in_progress",))
        # somewhere in its run: lines in flight, some written, some not yet started
        assert wait_until(
            lambda c=client: c.batches.retrieve(batch.id).request_counts.completed > 0, 30
        )
        time.sleep(rng.uniform(0.05, 0.4))
        server.process.kill()
        assert server.process.wait(10) == -9
        server = start(number)
    assert_each_line_once(sdk(server), batch.id)


def test_two_replicas_run_a_batch_once_and_the_survivor_takes_it_over(
    launcher: Launcher, postgres: PostgresServer, tmp_path: Path
):
    url = postgres.create_database("batch_replicas")
    replicas = launcher.start_together(
        [(tmp_path / f"{name}.log", ("--database-url", url, *LEASE)) for name in "ab"],
        step_delay_s=STEP_S,
    )
    for replica in replicas:
        wait_healthy(replica)
    client = sdk(replicas[0])
    batch = client.batches.create(
        input_file_id=upload(client, study_lines()),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    assert wait_until(lambda: client.batches.retrieve(batch.id).request_counts.completed > 2, 30)
    state = PostgresState(dsn_of(url))
    [(holder,)] = state.rows("SELECT lease_owner FROM batches WHERE id = ?", batch.id)
    claimed = [r for r in replicas if holder in r.log_path.read_text()]
    assert len(claimed) == 1  # one replica runs it; the other never claimed it
    (running,) = claimed
    (survivor,) = [r for r in replicas if r is not running]
    running.process.kill()
    assert running.process.wait(10) == -9
    assert_each_line_once(sdk(survivor), batch.id)
    assert "batch claimed" in survivor.log_path.read_text()
