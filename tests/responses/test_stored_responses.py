"""Stored responses and conversations against the real engine, through the official `openai`
package: a follow-up by `previous_response_id` or by `conversation` is the prompt the client
would have re-sent in full (same prompt tokens, same greedy tokens, images included), and the
SDK's `retrieve`, `delete`, `input_items.list` and `conversations` calls work as written."""

from __future__ import annotations

import sys

import httpx
import openai
import pytest
from openai.types.conversations import Conversation
from openai.types.responses import Response

from tests.utils.images import image_data_url

pytestmark = pytest.mark.e2e  # what the engine answers is what is stored and replayed

IMAGE = image_data_url(224, 224, seed=7)
# 256 image tokens: the first turn fills at least one KV block (128 tokens on the CPU build), so
# a follow-up finds it in vLLM's prefix cache
STUDY = image_data_url(448, 448, seed=7)
GREEDY = {"temperature": 0, "max_output_tokens": 6}


@pytest.fixture
def sdk(server):
    return openai.OpenAI(
        base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=600
    )


def question(text: str, image: str | None = None) -> dict:
    parts = [{"type": "input_image", "image_url": image}] if image else []
    return {"role": "user", "content": [*parts, {"type": "input_text", "text": text}]}


def replayed(response: Response) -> list[dict]:
    """A response's output as a client sends it back in a later request's input."""
    return [item.model_dump(mode="json", exclude_none=True) for item in response.output]


def test_a_follow_up_by_previous_response_id_is_the_conversation_re_sent(sdk, server):
    first = sdk.responses.create(
        model=server.model, input=[question("Describe the findings.", STUDY)], store=True, **GREEDY
    )
    assert first.store is True
    chained = sdk.responses.create(
        model=server.model,
        input="And the heart?",
        previous_response_id=first.id,
        store=True,
        **GREEDY,
    )
    third = sdk.responses.create(
        model=server.model, input="Any effusion?", previous_response_id=chained.id, **GREEDY
    )
    history = [question("Describe the findings.", STUDY), *replayed(first)]
    resent = sdk.responses.create(
        model=server.model, input=[*history, question("And the heart?")], store=False, **GREEDY
    )
    assert chained.previous_response_id == first.id and resent.store is False
    # the turns before were in vLLM's prefix cache, and the usage says so
    assert chained.usage.input_tokens_details.cached_tokens >= 128
    assert first.usage.input_tokens_details.cached_tokens < 128
    assert chained.usage.input_tokens == resent.usage.input_tokens
    assert chained.output_text == resent.output_text
    history += [question("And the heart?"), *replayed(chained)]
    resent_third = sdk.responses.create(
        model=server.model, input=[*history, question("Any effusion?")], **GREEDY
    )
    assert third.usage.input_tokens == resent_third.usage.input_tokens
    assert third.output_text == resent_third.output_text
    # /tokenize counts the same prompt for the same conversation as chat messages
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": STUDY}},
                {"type": "text", "text": "Describe the findings."},
            ],
        },
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "And the heart?"},
    ]
    counted = httpx.post(f"{server.base_url}/tokenize", json={"messages": messages}, timeout=60)
    assert counted.json()["count"] == chained.usage.input_tokens


def test_retrieve_input_items_and_delete_through_the_sdk(sdk, server):
    created = sdk.responses.create(
        model=server.model,
        input=[question("Describe the findings.", IMAGE), question("Be brief.")],
        instructions="You are a radiology assistant.",
        store=True,
        **GREEDY,
    )
    kept = sdk.responses.retrieve(created.id)
    assert Response.model_validate(kept.model_dump()) == kept
    assert kept.output == created.output and kept.usage == created.usage
    assert kept.instructions == "You are a radiology assistant."
    newest_first = list(sdk.responses.input_items.list(created.id, limit=1))  # pages of one
    assert [item.content[-1].text for item in newest_first] == [
        "Be brief.",
        "Describe the findings.",
    ]
    oldest = sdk.responses.input_items.list(created.id, order="asc", limit=1)
    assert oldest.data[0].content[0].image_url == IMAGE and oldest.has_more is True
    assert sdk.responses.delete(created.id) is None
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(created.id)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model=server.model, input="x", previous_response_id=created.id)
    assert refused.value.code == "previous_response_not_found"


def test_a_streamed_stored_response_is_kept_as_it_ended(sdk, server):
    events = list(
        sdk.responses.create(
            model=server.model,
            input=[question("Findings?", IMAGE)],
            store=True,
            stream=True,
            **GREEDY,
        )
    )
    final = events[-1].response
    assert events[-1].type in {"response.completed", "response.incomplete"}
    kept = sdk.responses.retrieve(final.id)
    assert kept.status == final.status and kept.output_text == final.output_text
    assert kept.store is True and kept.usage == final.usage


def test_a_conversation_carries_the_turns(sdk, server):
    conversation = sdk.conversations.create(
        items=[question("Describe the findings.", IMAGE)], metadata={"study": "chest"}
    )
    assert Conversation.model_validate(conversation.model_dump()) == conversation
    answered = sdk.responses.create(
        model=server.model, input="And the heart?", conversation=conversation.id, **GREEDY
    )
    assert answered.conversation.id == conversation.id
    resent = sdk.responses.create(
        model=server.model,
        input=[question("Describe the findings.", IMAGE), question("And the heart?")],
        **GREEDY,
    )
    assert answered.usage.input_tokens == resent.usage.input_tokens
    assert answered.output_text == resent.output_text
    items = list(sdk.conversations.items.list(conversation.id, order="asc"))
    assert [(item.type, item.role) for item in items] == [
        ("message", "user"),
        ("message", "user"),
        ("message", "assistant"),
    ]
    assert items[0].content[0].image_url == IMAGE
    assert items[2].content[0].text == answered.output_text
    again = sdk.responses.create(
        model=server.model, input="Anything else?", conversation={"id": conversation.id}, **GREEDY
    )
    assert again.usage.input_tokens > answered.usage.input_tokens + answered.usage.output_tokens
    added = sdk.conversations.items.create(conversation.id, items=[question("Thanks.")])
    assert [item.content[0].text for item in added.data] == ["Thanks."]
    one = sdk.conversations.items.retrieve(added.data[0].id, conversation_id=conversation.id)
    assert one.id == added.data[0].id
    sdk.conversations.items.delete(added.data[0].id, conversation_id=conversation.id)
    updated = sdk.conversations.update(conversation.id, metadata={"study": "chest", "read": "1"})
    assert sdk.conversations.retrieve(conversation.id).metadata == updated.metadata
    assert sdk.conversations.delete(conversation.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.retrieve(conversation.id)


def test_the_guides_examples_run_as_written(server, tmp_path):
    from tests.utils.docs import fenced_blocks, on_server, page, run_example
    from tests.utils.images import encode, gradient_image

    (tmp_path / "chest_xray.png").write_bytes(encode(gradient_image(224, 224, mode="L"), "PNG"))
    chained, continued = fenced_blocks("py", page("guides/stored-responses.md"))
    script = on_server(chained, server.port) + "\n" + continued
    output = run_example([sys.executable, "-c", script], tmp_path).splitlines()
    assert output[:2] == ["True", "['message']"]
    assert output[2:] == ["user", "assistant"]


def test_the_follow_up_benchmark_runs(server):
    """benchmarks/follow_up.py cannot rot: its measurements, once, on this session's server."""
    from benchmarks import follow_up
    from tests.utils.tiers import api_pid

    report = follow_up.measure(server, repeats=2, image_size=256, api_pid=api_pid(server))
    chained, full = (report["results"][k] for k in ("previous_response_id", "re_sent_in_full"))
    assert chained["request_bytes"] < 1000 < full["request_bytes"]
    assert chained["ttft_p50_ms"] > 0 and full["api_cpu_ms"] >= 0
    assert "previous_response_id / re-sent: TTFT" in follow_up.render(report)
