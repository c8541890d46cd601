"""PostgreSQL stopped while requests are storing: each is a clean 503 with Retry-After in
OpenAI's error shape (a stream: an error event and `response.failed`, never a finished
response), /health says the database is why, requests that store nothing are served, and the
same server process stores again once the database is back, with nothing kept before lost.

The requests wait on a lock the test holds on the responses table (tests/utils/stored_databases)
when the database stops: mid-request, their answers generated and not yet stored.
"""

from __future__ import annotations

import httpx
import pytest

from tests.storage.conftest import Backend
from tests.utils.errors import assert_openai_error
from tests.utils.images import image_data_url
from tests.utils.postgres import PostgresServer
from tests.utils.stored_responses import (
    FINISHED,
    RESPONSES,
    retry_after_s,
    start_stored_pair,
    turn_body,
    user_turn,
)
from tests.utils.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.beside_engine]


def database_health(client: httpx.Client) -> str:
    health = client.get("/health")
    assert health.status_code == 200, health.text  # the model still serves: alive
    return health.json()["database"]


def unavailable(response: httpx.Response) -> None:
    assert_openai_error(response, 503, code="storage_unavailable")
    assert retry_after_s(response) >= 1


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_database_stopped_mid_request_is_a_503_and_the_server_recovers(
    backend: Backend, postgres: PostgresServer
) -> None:
    server = backend.server()
    image_url = image_data_url(56, 56, seed=7)
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        kept = client.post(RESPONSES, json=turn_body(user_turn("Kept before", image_url)))
        assert kept.status_code == 200, kept.text
        hold = backend.state.hold_commits()
        try:
            pair = start_stored_pair(server.base_url, image_url)
            hold.wait_blocked(server.base_url, 2)
            postgres.stop()
            hold.release()
            pair.join()
            unavailable(pair.outcome["result"])
            stream = pair.stream
            assert stream.kinds[-2:] == ["error", "response.failed"], stream.kinds
            assert stream.events[-2]["code"] == "storage_unavailable"
            assert not set(FINISHED) & set(stream.kinds)

            problem = database_health(client)
            assert problem != "ok" and "database" in problem, problem
            unavailable(client.post(RESPONSES, json=turn_body(user_turn("Down", image_url))))
            unavailable(client.get(f"{RESPONSES}/{kept.json()['id']}"))
            # a chain it cannot read is not a chain that does not exist (400 not found)
            follow_up = turn_body(user_turn("Follow-up"), kept.json()["id"])
            unavailable(client.post(RESPONSES, json=follow_up))
            unavailable(client.post("/v1/conversations", json={}))
            plain = client.post(
                RESPONSES, json={"input": "Down", "store": False, "max_output_tokens": 4}
            )
            assert plain.status_code == 200, plain.text
        finally:
            postgres.start()

        assert wait_for(lambda: database_health(client) == "ok", 30)
        again = client.post(RESPONSES, json=turn_body(user_turn("Back", image_url)))
        assert again.status_code == 200, again.text
        for response in (kept.json(), again.json()):
            assert client.get(f"{RESPONSES}/{response['id']}").json() == response
    assert server.process.poll() is None and backend.server() is server  # no restart
