"""Stored responses on both databases against the real engine: a front end of the shared engine
keeps its responses in the folder's PostgreSQL, another in SQLite, and on each a follow-up by
`previous_response_id` and by `conversation` is the prompt the client would have re-sent (same
prompt tokens, same greedy answer), the image included."""

from __future__ import annotations

import httpx
import pytest

from tests.utils.images import image_data_url

pytestmark = pytest.mark.e2e

IMAGE = image_data_url(224, 224, seed=31)
GREEDY = {"temperature": 0, "max_output_tokens": 5}


@pytest.fixture(params=["sqlite", "postgresql"])
def stored(request, shared_engine, postgres, tmp_path_factory) -> httpx.Client:
    if request.param == "postgresql":
        place = ["--database-url", postgres.create_database("engine_chains")]
    else:
        place = ["--state-dir", str(tmp_path_factory.mktemp("engine-chains"))]
    server = shared_engine.frontend(f"stored-{request.param}", "--store-responses", *place)
    with httpx.Client(base_url=server.base_url, timeout=300) as client:
        yield client


def answer(client: httpx.Client, **body) -> dict:
    response = client.post("/v1/responses", json={**GREEDY, **body})
    assert response.status_code == 200, response.text
    return response.json()


def turn(text: str, image: str | None = None) -> dict:
    parts = [{"type": "input_image", "image_url": image}] if image else []
    return {"role": "user", "content": [*parts, {"type": "input_text", "text": text}]}


def said(response: dict) -> dict:
    return {"role": "assistant", "content": [{"type": "output_text", "text": text_of(response)}]}


def text_of(response: dict) -> str:
    return response["output"][0]["content"][0]["text"]


def test_chains_and_conversations_replay_the_re_sent_prompt(stored):
    first = answer(stored, input=[turn("Describe the findings.", IMAGE)])
    assert first["store"] is True  # the server's --store-responses
    chained = answer(stored, input="And the heart?", previous_response_id=first["id"])
    history = [turn("Describe the findings.", IMAGE), said(first), turn("And the heart?")]
    resent = answer(stored, input=history, store=False)
    assert chained["usage"]["input_tokens"] == resent["usage"]["input_tokens"]
    assert text_of(chained) == text_of(resent)
    kept = stored.get(f"/v1/responses/{chained['id']}").json()
    assert kept["output"] == chained["output"]

    conversation = stored.post("/v1/conversations", json={"items": [turn("Findings?", IMAGE)]})
    in_conversation = answer(stored, input="Effusion?", conversation=conversation.json()["id"])
    direct = answer(stored, input=[turn("Findings?", IMAGE), turn("Effusion?")], store=False)
    assert in_conversation["usage"]["input_tokens"] == direct["usage"]["input_tokens"]
    assert text_of(in_conversation) == text_of(direct)
