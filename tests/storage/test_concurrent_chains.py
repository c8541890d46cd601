"""Fifty conversations at once, each chained turn by turn with previous_response_id: every turn
is stored, each chain reads back its own turns and nobody else's, and each answer is the one the
whole conversation re-sent would get (the fake engine's answer is a function of the prompt's
token ids, so a chain replayed with another chain's turn, or a turn missing, answers otherwise).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.storage.conftest import Backend
from tests.utils.images import image_data_url
from tests.utils.stored_responses import (
    RESPONSES,
    answer_text,
    resent_in_full,
    turn_body,
    user_turn,
)

pytestmark = [pytest.mark.e2e, pytest.mark.beside_engine]

CHAINS = 50
TURNS = 3


def chain_turns(chain: int) -> list[dict[str, Any]]:
    """Each chain's own words, and its own image in the first turn."""
    first = user_turn(f"Patient {chain}: findings?", image_data_url(56, 56, seed=chain))
    return [first] + [user_turn(f"Patient {chain}, question {t}?") for t in range(1, TURNS)]


def fresh_connections(base_url: str) -> httpx.AsyncClient:
    """A client that opens a connection per request. With dozens of tasks on a loaded machine,
    a task may take longer than the server's keep-alive (5 s) to send its next request, and a
    request sent as the server closes the idle connection is reset (ECONNRESET)."""
    limits = httpx.Limits(max_connections=2 * CHAINS, max_keepalive_connections=0)
    return httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits)


async def post(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(RESPONSES, json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def run_chain(client: httpx.AsyncClient, turns: list[dict[str, Any]]) -> list[dict]:
    answers: list[dict[str, Any]] = []
    for turn in turns:
        previous = answers[-1]["id"] if answers else None
        answers.append(await post(client, turn_body(turn, previous)))
    return answers


async def check_chain(
    client: httpx.AsyncClient, turns: list[dict[str, Any]], answers: list[dict[str, Any]]
) -> None:
    for i, (turn, answer) in enumerate(zip(turns, answers, strict=True)):
        stored = await client.get(f"{RESPONSES}/{answer['id']}")
        assert stored.status_code == 200, stored.text
        assert stored.json() == answer
        assert answer["previous_response_id"] == (answers[i - 1]["id"] if i else None)
        items = (await client.get(f"{RESPONSES}/{answer['id']}/input_items")).json()["data"]
        assert [item["content"] for item in items] == [turn["content"]]
    resent = await post(client, resent_in_full(turns, answers[:-1]))
    assert answer_text(resent) == answer_text(answers[-1])


def test_fifty_chains_at_once_lose_nothing_and_never_cross(backend: Backend) -> None:
    server = backend.server()
    turns = [chain_turns(chain) for chain in range(CHAINS)]

    async def everything() -> None:
        async with fresh_connections(server.base_url) as client:
            answers = await asyncio.gather(*(run_chain(client, chain) for chain in turns))
            await asyncio.gather(
                *(check_chain(client, t, a) for t, a in zip(turns, answers, strict=True))
            )

    asyncio.run(everything())


def test_turns_at_once_on_one_conversation_are_each_kept_whole(backend: Backend) -> None:
    """Concurrent turns of one conversation queue up: each is appended whole (its question,
    then its own answer), none lost, none refused."""
    server = backend.server()
    questions = [f"Question {i}?" for i in range(20)]

    async def everything() -> None:
        async with fresh_connections(server.base_url) as client:
            conversation = (await client.post("/v1/conversations", json={})).json()["id"]
            answers = await asyncio.gather(
                *(
                    post(client, {"input": q, "conversation": conversation, "max_output_tokens": 2})
                    for q in questions
                )
            )
            listed = await client.get(
                f"/v1/conversations/{conversation}/items",
                params={"order": "asc", "limit": 2 * len(questions)},
            )
            items = listed.json()["data"]
            assert len(items) == 2 * len(questions), items
            by_reply = {answer["output"][0]["id"]: answer["id"] for answer in answers}
            asked = []
            for question, reply in zip(items[::2], items[1::2], strict=True):
                text = question["content"][0]["text"]
                # the reply after each question is the answer to that very question
                stored = await client.get(f"{RESPONSES}/{by_reply[reply['id']]}/input_items")
                assert stored.json()["data"][0]["content"][0]["text"] == text
                asked.append(text)
            assert sorted(asked) == sorted(questions)

    asyncio.run(everything())
