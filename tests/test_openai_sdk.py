"""The official `openai` Python package as the client."""

from __future__ import annotations

import time
import uuid

import openai
import pytest

from tests.utils.images import image_data_url
from tests.utils.metrics import metric


@pytest.fixture
def sdk(server):
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


def messages():
    return [
        {"role": "system", "content": "You are a radiology assistant."},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_data_url(224, 224)}},
                {"type": "text", "text": "Describe the findings."},
            ],
        },
    ]


@pytest.mark.e2e
def test_create_non_streaming(sdk, server):
    completion = sdk.chat.completions.create(model=server.model, messages=messages(), max_tokens=8)
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason in {"stop", "length"}
    assert completion.usage.prompt_tokens > 64


@pytest.mark.e2e
def test_create_streaming(sdk, server):
    stream = sdk.chat.completions.create(
        model=server.model,
        messages=messages(),
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish in (["stop"], ["length"])
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens >= 1
    assert isinstance(text, str)


@pytest.mark.e2e
def test_a_repeated_prompt_says_how_much_of_it_was_cached(sdk, server):
    """vLLM's prefix cache holds a prompt sent before: the answer's usage says how many of its
    tokens came from there, where OpenAI puts it, and the metric counts them."""
    text = f"Case {uuid.uuid4().hex}. " + "The lungs are clear; no pleural effusion. " * 24
    before = metric(server.base_url, "lingshu_prompt_tokens_cached_total")
    chat = {"model": server.model, "messages": [{"role": "user", "content": text}]}
    first, second = (sdk.chat.completions.create(**chat, max_tokens=1) for _ in range(2))
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    # at least one whole KV block (128 tokens on the CPU build), never the last token
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert 128 <= cached < second.usage.prompt_tokens == first.usage.prompt_tokens
    # text completions, and the usage chunk of a stream
    plain = sdk.completions.create(model=server.model, prompt=text, max_tokens=1)
    stream = sdk.completions.create(
        model=server.model,
        prompt=text,
        max_tokens=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [chunk.usage for chunk in stream if chunk.usage is not None]
    assert usage[-1].prompt_tokens_details.cached_tokens >= 128
    answers = [first.usage, second.usage, plain.usage, usage[-1]]
    counted = sum(answer.prompt_tokens_details.cached_tokens for answer in answers)
    assert wait_for(
        lambda: metric(server.base_url, "lingshu_prompt_tokens_cached_total"), before + counted
    )


def wait_for(read, expected: float, attempts: int = 50) -> bool:
    """Whether `read()` reaches `expected`: the metric is counted once the response has gone."""
    for _ in range(attempts):
        if read() == expected:
            return True
        time.sleep(0.1)
    return False


def test_models_list(sdk, server):
    models = sdk.models.list()
    assert [m.id for m in models.data] == [server.model]


def test_sdk_raises_typed_errors(sdk):
    with pytest.raises(openai.NotFoundError) as not_found:
        sdk.chat.completions.create(model="no-such-model", messages=messages(), max_tokens=1)
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(model="lingshu-demo", messages=[], max_tokens=1)
    assert bad.value.body["param"] == "messages"
