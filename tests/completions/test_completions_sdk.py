"""The official `openai` package's completions client against the real server."""

from __future__ import annotations

import openai
import pytest

PROMPT = "<|im_start|>user\nIs there a pneumothorax?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture
def sdk(server):
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


@pytest.mark.e2e
def test_create(sdk, server):
    completion = sdk.completions.create(
        model=server.model,
        prompt=PROMPT,
        max_tokens=6,
        logprobs=2,
        extra_body={"ignore_eos": True},  # vLLM's extra: exactly max_tokens tokens
    )
    assert completion.object == "text_completion"
    (choice,) = completion.choices
    assert choice.finish_reason == "length"
    assert len(choice.logprobs.tokens) == 6 == completion.usage.completion_tokens
    assert choice.logprobs.text_offset[0] == 0
    tops = choice.logprobs.top_logprobs
    assert all(token in top for token, top in zip(choice.logprobs.tokens, tops, strict=True))


@pytest.mark.e2e
def test_stream_with_usage(sdk, server):
    greedy = sdk.completions.create(model=server.model, prompt=PROMPT, max_tokens=8, temperature=0)
    stream = sdk.completions.create(
        model=server.model,
        prompt=PROMPT,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == greedy.choices[0].text
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == greedy.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == greedy.usage.prompt_tokens


def test_list_of_prompts_and_n(sdk, server):
    completion = sdk.completions.create(
        model=server.model,
        prompt=["Findings:", "Impression:"],
        n=2,
        max_tokens=3,
        temperature=0.8,
    )
    assert sorted(c.index for c in completion.choices) == [0, 1, 2, 3]


def test_sdk_raises_typed_errors(sdk, server):
    with pytest.raises(openai.NotFoundError):
        sdk.completions.create(model="no-such-model", prompt="x", max_tokens=1)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(model=server.model, prompt="pleural " * 20000)
    assert caught.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(model=server.model, prompt=[1, 10**6])
    assert caught.value.code == "invalid_token_id"
