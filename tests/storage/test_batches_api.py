"""The Batch API at the HTTP edge, through the openai SDK, on the fake engine: a batch runs every
line through the live endpoint's service and writes one line per request, lines run below
people, each batch is its creator's, cancelling stops it, expiry ends it with the rest in the
error file, and the metrics and audit log say what happened (ids, never content)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import OpenAI

from tests.storage.conftest import KEYS, StoringServer
from tests.utils.batches import (
    chat_body,
    file_lines,
    jsonl,
    outcomes,
    request_line,
    upload,
    wait_for,
)
from tests.utils.images import image_data_url
from tests.utils.in_process_care import slow_steps

IMAGE = image_data_url(64, 64, seed=5)


@pytest.fixture
def alice(storing: StoringServer) -> Iterator[OpenAI]:
    """The SDK as the storing server's first key (`--batch-max-in-flight` is 2 there)."""
    with OpenAI(base_url=f"{storing.running.base_url}/v1", api_key=KEYS[0], max_retries=0) as c:
        yield c


@pytest.fixture
def bob(storing: StoringServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{storing.running.base_url}/v1", api_key=KEYS[1], max_retries=0) as c:
        yield c


SECRET = "Patient Jan Kowalski, MRN 5521-0098"


def test_a_batch_answers_each_line_as_the_live_endpoint_would(alice, storing: StoringServer):
    bodies = {
        "plain": chat_body("Findings?", max_tokens=4),
        "image": chat_body("Describe the image.", image=IMAGE, max_tokens=3),
        "unknown-model": {**chat_body("Hi", max_tokens=2), "model": "no-such-model"},
    }
    lines = [request_line(cid, body) for cid, body in bodies.items()]
    content = jsonl(lines[:1]) + b"\n" + jsonl(lines[1:])  # a blank line is no request
    file_id = alice.files.create(file=("night.jsonl", content), purpose="batch").id
    created = alice.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"worklist": "night"},
    )
    assert created.status == "validating" and created.metadata == {"worklist": "night"}
    batch = wait_for(alice, created.id)
    assert batch.status == "completed"
    assert (batch.request_counts.total, batch.request_counts.completed) == (3, 2)
    assert batch.request_counts.failed == 1
    assert batch.in_progress_at and batch.completed_at and batch.completed_at >= batch.created_at
    found = outcomes(alice, batch)
    assert {cid: len(lines) for cid, lines in found.items()} == dict.fromkeys(bodies, 1)
    for cid in ("plain", "image"):
        (line,) = found[cid]
        assert line["error"] is None and line["response"]["status_code"] == 200
        live = alice.chat.completions.with_raw_response.create(**bodies[cid]).http_response.json()
        answer = line["response"]["body"]
        assert answer["object"] == "chat.completion"
        assert (answer["choices"], answer["usage"]) == (live["choices"], live["usage"])
        assert answer.keys() == live.keys()
    (refused,) = found["unknown-model"]
    assert refused["response"]["status_code"] == 404
    assert refused["response"]["body"]["error"]["code"] == "model_not_found"
    assert [line["custom_id"] for line in file_lines(alice, batch.error_file_id)] == [
        "unknown-model"
    ]


def test_batch_lines_run_below_people(alice, storing: StoringServer):
    file_id = upload(alice, [request_line(f"r{i}", chat_body("Findings?")) for i in range(2)])
    batch = wait_for(
        alice,
        alice.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id,
    )
    engine = storing.running.engine
    for line in file_lines(alice, batch.output_file_id):
        assert engine.priorities[line["response"]["body"]["id"]] == 10  # --batch-priority
    live = alice.chat.completions.create(**chat_body("Findings?", max_tokens=2))
    assert engine.priorities[live.id] == 0


def test_the_three_endpoints_run_in_batches(alice):
    cases = {
        "/v1/responses": {"model": "lingshu-demo", "input": "Findings?", "max_output_tokens": 3},
        "/v1/completions": {"model": "lingshu-demo", "prompt": "Findings:", "max_tokens": 3},
    }
    for endpoint, body in cases.items():
        file_id = upload(alice, [request_line("only", body, url=endpoint)])
        batch = wait_for(
            alice,
            alice.batches.create(
                input_file_id=file_id, endpoint=endpoint, completion_window="24h"
            ).id,
        )
        (line,) = outcomes(alice, batch)["only"]
        answer = line["response"]["body"]
        assert answer["object"] == (
            "response" if endpoint == "/v1/responses" else "text_completion"
        )


def test_each_batch_is_its_creators(alice, bob):
    file_id = upload(alice, [request_line("a", chat_body(SECRET, max_tokens=1))])
    mine = alice.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    with pytest.raises(openai.NotFoundError):
        bob.batches.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        bob.batches.cancel(mine.id)
    assert mine.id not in [batch.id for batch in bob.batches.list()]
    assert mine.id in [batch.id for batch in alice.batches.list()]
    with pytest.raises(openai.BadRequestError) as refused:  # her file is not his to run
        bob.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert refused.value.body["param"] == "input_file_id"
    ended = wait_for(alice, mine.id)
    with pytest.raises(openai.NotFoundError):
        bob.files.content(ended.output_file_id)


def test_a_batch_that_cannot_run_is_refused_with_a_clear_error(alice, storing: StoringServer):
    file_id = upload(alice, [request_line("a", chat_body("Hi", max_tokens=1))])
    http = httpx.Client(
        base_url=storing.running.base_url,
        headers={"Authorization": f"Bearer {alice.api_key}"},
    )
    cases = [
        ({"input_file_id": "file-nothing", "endpoint": "/v1/chat/completions"}, "input_file_id"),
        ({"input_file_id": file_id, "endpoint": "/v1/responses"}, "endpoint"),
        ({"input_file_id": file_id, "endpoint": "/v1/embeddings"}, "endpoint"),
        (
            {
                "input_file_id": file_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "1y",
            },
            "completion_window",
        ),
    ]
    for body, param in cases:
        refused = http.post("/v1/batches", json=body)
        assert refused.status_code == 400, refused.text
        assert set(refused.json()["error"]) == {"message", "type", "param", "code"}
        assert refused.json()["error"]["param"] == param
    done = wait_for(
        alice,
        alice.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id,
    )
    with pytest.raises(openai.ConflictError):
        alice.batches.cancel(done.id)
    http.close()


def test_cancelling_stops_new_lines_and_keeps_the_finished(alice, storing: StoringServer):
    lines = [request_line(f"r{i}", chat_body(f"Study {i}", max_tokens=6)) for i in range(12)]
    file_id = upload(alice, lines)
    with slow_steps(storing.running, 0.05):
        batch = alice.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        running = wait_for(alice, batch.id, ("in_progress",))
        while alice.batches.retrieve(batch.id).request_counts.completed < 2:
            pass
        cancelling = alice.batches.cancel(running.id)
        assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
        ended = wait_for(alice, batch.id, timeout=5)
    assert ended.status == "cancelled" and ended.cancelled_at
    done = outcomes(alice, ended)
    assert 2 <= len(done) < len(lines)
    assert all(len(found) == 1 for found in done.values())
    assert ended.request_counts.completed == len(done)


def test_a_batch_past_its_window_expires_with_the_rest_in_its_error_file(
    alice, storing: StoringServer
):
    lines = [request_line(f"r{i}", chat_body(f"Study {i}", max_tokens=20)) for i in range(6)]
    with slow_steps(storing.running, 0.05):
        batch = alice.batches.create(
            input_file_id=upload(alice, lines),
            endpoint="/v1/chat/completions",
            completion_window="1s",
        )
        ended = wait_for(alice, batch.id, timeout=10)
    assert ended.status == "expired" and ended.expired_at
    done = outcomes(alice, ended)
    assert sorted(done) == sorted(line["custom_id"] for line in lines)  # each exactly once
    assert all(len(found) == 1 for found in done.values())
    expired = [line for line in file_lines(alice, ended.error_file_id) if line["error"]]
    assert expired and {line["error"]["code"] for line in expired} == {"batch_expired"}
    assert all(line["response"] is None for line in expired)
    assert ended.request_counts.failed == len(expired)


def test_metrics_and_audit_name_batches_by_id_never_content(alice, storing: StoringServer):
    lines = [request_line("s", chat_body(SECRET, image=IMAGE, max_tokens=2))]
    batch = wait_for(
        alice,
        alice.batches.create(
            input_file_id=upload(alice, lines),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        ).id,
    )
    metrics = httpx.get(
        f"{storing.running.base_url}/metrics", headers={"Authorization": f"Bearer {alice.api_key}"}
    ).text
    assert 'lingshu_batch_lines_total{outcome="completed"}' in metrics
    assert 'lingshu_queue_depth{priority="batch"}' in metrics
    audit = [json.loads(line) for line in storing.audit_path.read_text().splitlines()]
    created = [
        r
        for r in audit
        if {"action": "created", "id": batch.id, "sha256": []} in r.get("stored", [])
    ]
    assert created and created[0]["route"] == "/v1/batches"
    (line,) = outcomes(alice, batch)["s"]
    ran = [r for r in audit if r.get("request_id") == line["id"]]
    assert ran and ran[0]["route"] == "/v1/chat/completions" and len(ran[0]["images"]) == 1
    assert SECRET not in storing.audit_path.read_text()
    assert SECRET not in storing.running.log_text()
