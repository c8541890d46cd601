"""The official `openai` Python package as the client."""

from __future__ import annotations

import openai
import pytest

from tests.utils.images import image_data_url


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
