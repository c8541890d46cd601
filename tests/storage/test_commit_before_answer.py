"""A stored response is reported done only once it is kept: the server killed (-9) after a
response's last token and before its storage commit left the client with an error and the
database with nothing of it; a commit held up is answered only once it went through.

The test holds the database's write lock itself (tests/utils/stored_databases), so the server's
commit waits exactly there, the answer generated (a stream past its last output event); then it
kills the server, or lets go of the lock.
"""

from __future__ import annotations

import hashlib
import secrets
from base64 import b64decode

import httpx
import pytest

from tests.storage.conftest import Backend
from tests.utils.errors import assert_openai_error
from tests.utils.images import image_data_url
from tests.utils.stored_responses import (
    FINISHED,
    LAST_OUTPUT_EVENT,
    RESPONSES,
    start_stored_pair,
)

pytestmark = [pytest.mark.e2e, pytest.mark.beside_engine]


def fresh_image() -> tuple[str, str]:
    """A data URL of an image no test sent before, and the SHA-256 it is stored by."""
    url = image_data_url(56, 56, seed=secrets.randbits(32))
    return url, hashlib.sha256(b64decode(url.partition(",")[2])).hexdigest()


def test_killed_before_the_commit_the_client_got_an_error_and_nothing_is_stored(
    backend: Backend,
) -> None:
    server = backend.server()
    image_url, sha256 = fresh_image()
    [(stored_before,)] = backend.state.rows("SELECT count(*) FROM responses")
    hold = backend.state.hold_commits()
    try:
        pair = start_stored_pair(server.base_url, image_url)
        hold.wait_blocked(server.base_url, 2)
        assert pair.pending
        server.process.kill()
        assert server.process.wait(10) == -9
    finally:
        hold.release()
    pair.join()
    # The plain request: a broken connection, never a 200.
    assert isinstance(pair.outcome.get("error"), httpx.TransportError), pair.outcome
    # The stream: cut off after the answer's last output event, never told it finished.
    stream = pair.stream
    assert stream.status == 200 and isinstance(stream.error, httpx.TransportError)
    assert stream.kinds[-1] == LAST_OUTPUT_EVENT
    # The server started again on the same database finds nothing of either.
    restarted = backend.server()
    assert restarted.process.pid != server.process.pid
    with httpx.Client(base_url=restarted.base_url, timeout=30) as client:
        lost = client.get(f"{RESPONSES}/{stream.response_id}")
        assert_openai_error(lost, 404, param="response_id")
    assert backend.state.rows("SELECT count(*) FROM responses") == [(stored_before,)]
    assert backend.state.rows("SELECT count(*) FROM blobs WHERE sha256 = ?", sha256) == [(0,)]


def test_a_held_commit_is_answered_only_once_it_is_kept(backend: Backend) -> None:
    server = backend.server()
    image_url, _ = fresh_image()
    hold = backend.state.hold_commits()
    try:
        pair = start_stored_pair(server.base_url, image_url)
        hold.wait_blocked(server.base_url, 2)
        assert pair.pending  # generated, not yet stored: neither is told it finished
    finally:
        hold.release()
    pair.join()
    answered = pair.outcome["result"]
    assert answered.status_code == 200, answered.text
    assert pair.stream.error is None and pair.stream.kinds[-1] in FINISHED
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for response in (answered.json(), pair.stream.final):
            assert response is not None and response["store"] is True
            kept = client.get(f"{RESPONSES}/{response['id']}")
            assert kept.status_code == 200, kept.text
            assert kept.json() == response
            items = client.get(f"{RESPONSES}/{response['id']}/input_items").json()["data"]
            assert items[0]["content"][1]["image_url"] == image_url
