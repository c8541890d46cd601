"""Chat completions: the response shapes on the fake engine; what the engine decides (token
counts of images, greedy and seeded text, stop strings, structured output) is `e2e`."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.utils.chat import chat, stream_events, user
from tests.utils.images import image_data_url, image_part, tokens_for
from tests.utils.tiers import IN_BOTH_TIERS


def test_text_only_completion(client):
    body = chat(
        client,
        [{"role": "user", "content": "Describe a normal chest X-ray."}],
        model="lingshu-demo",
        max_tokens=8,
        temperature=0,
    )
    assert body["object"] == "chat.completion"
    assert list(body) == [
        "id",
        "object",
        "created",
        "model",
        "system_fingerprint",
        "choices",
        "usage",
    ]  # OpenAI's field order, for clients that diff raw responses
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "lingshu-demo"
    assert body["system_fingerprint"].startswith("fp_")
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["message"]["annotations"] == []  # as OpenAI's, without web search
    assert choice["finish_reason"] in {"stop", "length"}
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0
    assert 1 <= usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.e2e
def test_prompt_tokens_count_each_image(client):
    messages = [user("Findings?")]
    text_only = chat(client, messages, max_tokens=1)["usage"]["prompt_tokens"]
    one = chat(client, [user(image_part(image_data_url(224, 224)), "Findings?")], max_tokens=1)
    # 224x224 is 8x8 visual tokens, plus <|vision_start|> and <|vision_end|>
    assert one["usage"]["prompt_tokens"] == text_only + tokens_for(224, 224) + 2
    bigger = chat(client, [user(image_part(image_data_url(448, 224)), "Findings?")], max_tokens=1)
    assert bigger["usage"]["prompt_tokens"] == text_only + tokens_for(448, 224) + 2


@pytest.mark.e2e
def test_two_images_in_one_message(client):
    messages = [
        user(
            image_part(image_data_url(224, 224, "PNG")),
            image_part(image_data_url(280, 224, "JPEG", seed=1)),
            "Compare the two studies.",
        )
    ]
    text_only = chat(client, [user("Compare the two studies.")], max_tokens=1)
    body = chat(client, messages, max_tokens=4)
    expected = text_only["usage"]["prompt_tokens"] + tokens_for(224, 224) + tokens_for(280, 224)
    assert body["usage"]["prompt_tokens"] == expected + 4


@pytest.mark.e2e
def test_image_resized_to_pixel_budget(client):
    # 1000x700 is not a multiple of 28: qwen-vl-utils' smart_resize rounds it to 1008x700
    body = chat(client, [user(image_part(image_data_url(1000, 700, "WEBP")), "Q")], max_tokens=1)
    text_only = chat(client, [user("Q")], max_tokens=1)["usage"]["prompt_tokens"]
    assert body["usage"]["prompt_tokens"] == text_only + (1008 // 28) * (700 // 28) + 2


@pytest.mark.e2e
def test_multi_turn_with_image_in_first_turn(client):
    messages = [
        {"role": "system", "content": "You are a radiology assistant."},
        user(image_part(image_data_url(224, 224)), "What do you see?"),
        {"role": "assistant", "content": "A frontal chest radiograph."},
        user("Is there an effusion?"),
    ]
    body = chat(client, messages, max_tokens=4)
    without_image = [messages[0], user("What do you see?"), messages[2], messages[3]]
    baseline = chat(client, without_image, max_tokens=1)["usage"]["prompt_tokens"]
    assert body["usage"]["prompt_tokens"] == baseline + tokens_for(224, 224) + 2


def test_streaming_matches_openai_shape(client):
    events = stream_events(
        client, [user(image_part(image_data_url(224, 224)), "Findings?")], max_tokens=6
    )
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    final = chunks[-1]["choices"][0]
    assert final["finish_reason"] in {"stop", "length"}
    assert final["delta"] == {}
    middle = chunks[1:-1]
    assert all(c["choices"][0]["finish_reason"] is None for c in middle)
    assert all("usage" not in c for c in chunks)
    assert middle, "expected at least one content delta"


@pytest.mark.e2e
def test_stream_text_equals_non_stream_text_greedy(client):
    messages = [user(image_part(image_data_url(224, 224)), "Findings?")]
    whole = chat(client, messages, max_tokens=10, temperature=0)
    events = stream_events(client, messages, max_tokens=10, temperature=0)
    streamed = "".join(
        e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"]
    )
    assert streamed == whole["choices"][0]["message"]["content"]


def test_include_usage_gives_one_usage_chunk_before_done(client):
    events = stream_events(
        client, [user("Findings?")], max_tokens=5, stream_options={"include_usage": True}
    )
    assert events[-1] == "[DONE]"
    usage_chunks = [e for e in events[:-1] if e.get("usage")]
    assert len(usage_chunks) == 1
    assert usage_chunks[0] is events[-2]
    assert usage_chunks[0]["choices"] == []
    usage = usage_chunks[0]["usage"]
    assert 1 <= usage["completion_tokens"] <= 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert all(e["usage"] is None for e in events[:-2])


def test_n_returns_independent_choices(client):
    body = chat(client, [user("Findings?")], n=2, max_tokens=5, temperature=1, seed=3)
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["usage"]["completion_tokens"] <= 10
    events = stream_events(client, [user("Findings?")], n=2, max_tokens=5)
    finished = {e["choices"][0]["index"] for e in events[:-1] if e["choices"][0]["finish_reason"]}
    assert finished == {0, 1}


def test_max_tokens_bounds_completion(client):
    for params in ({"max_tokens": 3}, {"max_completion_tokens": 2}):
        body = chat(client, [user("Findings?")], temperature=1, seed=0, **params)
        limit = next(iter(params.values()))
        assert body["usage"]["completion_tokens"] <= limit


@pytest.mark.e2e
def test_same_seed_same_text(client):
    """Two answers with the same system_fingerprint and seed: the same text."""
    params = {"temperature": 1.0, "seed": 1234, "max_tokens": 12}
    first, second = (chat(client, [user("Findings?")], **params) for _ in range(2))
    assert first["system_fingerprint"] == second["system_fingerprint"]
    assert first["choices"][0]["message"] == second["choices"][0]["message"]
    texts = {
        chat(client, [user("Findings?")], **{**params, "seed": s})["choices"][0]["message"][
            "content"
        ]
        for s in range(4)
    }
    assert len(texts) > 1, "different seeds should not all give the same text"


@pytest.mark.e2e
def test_stop_sequence_ends_generation(client):
    params = {"temperature": 0, "max_tokens": 24}
    free = chat(client, [user("Findings?")], **params)["choices"][0]
    text = free["message"]["content"]
    assert len(text) >= 4, text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    stopped = chat(client, [user("Findings?")], stop=[stop], **params)["choices"][0]
    assert stopped["finish_reason"] == "stop"
    assert stop not in stopped["message"]["content"]
    assert text.startswith(stopped["message"]["content"])


@pytest.mark.e2e
def test_sampling_parameters_are_accepted(client):
    body = chat(
        client,
        [user("Findings?")],
        max_tokens=4,
        temperature=0.7,
        top_p=0.9,
        top_k=20,
        min_p=0.05,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        repetition_penalty=1.1,
        user="viewer-42",
        some_future_field={"ignored": True},
    )
    assert body["choices"][0]["finish_reason"] in {"stop", "length"}


def test_logprobs_and_top_logprobs(client):
    body = chat(client, [user("Findings?")], max_tokens=4, logprobs=True, top_logprobs=3)
    choice = body["choices"][0]
    content = choice["logprobs"]["content"]
    assert len(content) == body["usage"]["completion_tokens"]
    for entry in content:
        assert entry["logprob"] <= 0
        assert len(entry["top_logprobs"]) == 3
        assert entry["top_logprobs"][0]["logprob"] >= entry["top_logprobs"][-1]["logprob"]
    assert choice["logprobs"]["refusal"] is None  # OpenAI's field: a refusal's tokens


def holds_part_of_a_character(token_bytes: list[int]) -> bool:
    try:
        bytes(token_bytes).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@IN_BOTH_TIERS
def test_logprob_bytes_are_each_tokens_own(client, tier):
    """A character the vocabulary splits over tokens (é, most CJK characters: the demo's
    byte-level vocabulary has every byte as a token) has no text of its own in each token
    (vLLM shows "", the fake U+FFFD), but each token's `bytes` are its own: joined in order,
    they give the text of the answer's tokens back."""
    body = chat(
        client,
        [user("Findings?")],
        max_tokens=16,
        ignore_eos=True,
        seed=5,
        logprobs=True,
        top_logprobs=2,
        return_token_ids=True,
    )
    choice = body["choices"][0]
    content = choice["logprobs"]["content"]
    split = [entry for entry in content if holds_part_of_a_character(entry["bytes"])]
    assert split, "no token of this answer holds part of a character"
    assert all(entry["token"] in ("", "\ufffd") for entry in split)
    joined = bytes(byte for entry in content for byte in entry["bytes"])
    detokenized = client.post("/detokenize", json={"tokens": choice["token_ids"]})
    assert joined.decode("utf-8", errors="replace") == detokenized.json()["prompt"]
    tops = [top for entry in content for top in entry["top_logprobs"]]
    assert all(top["bytes"] for top in tops)  # never empty: every token has bytes


# Every field bounded, so even a random-weight model must close the object within max_tokens.
# (xgrammar 0.2.8 lets control characters into strings bounded by maxLength, so use a pattern.)
SCHEMA = {
    "type": "object",
    "properties": {
        "finding": {"type": "string", "pattern": "^[a-z ]{1,24}$"},
        "severity": {"enum": ["normal", "abnormal", "critical"]},
        "urgent": {"type": "boolean"},
        "count": {"type": "integer", "minimum": 0, "maximum": 9},
    },
    "required": ["finding", "severity", "urgent", "count"],
    "additionalProperties": False,
}


@pytest.mark.e2e
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_json_schema_output_validates(client, seed):
    body = chat(
        client,
        [user("Report as JSON.")],
        max_tokens=200,
        seed=seed,
        temperature=1,
        response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}},
    )
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    content = choice["message"]["content"]
    jsonschema.validate(json.loads(content), SCHEMA)
    assert " " not in content.replace(json.loads(content)["finding"], ""), "compact JSON"


@pytest.mark.e2e
def test_json_object_output_parses(client):
    body = chat(
        client,
        [user("Report as JSON.")],
        max_tokens=200,
        seed=0,
        response_format={"type": "json_object"},
    )
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    assert isinstance(json.loads(choice["message"]["content"]), dict)


@pytest.mark.parametrize("model_field", [None, "lingshu-demo"])
def test_model_field_optional_or_served_name(client, model_field):
    params = {"max_tokens": 1}
    if model_field:
        params["model"] = model_field
    assert chat(client, [user("hi")], **params)["model"] == "lingshu-demo"


@pytest.mark.e2e
def test_a_seeded_prompt_longer_than_a_prefill_step_is_answered(client):
    """vLLM's CPU build killed its engine core when a seeded prompt was prefilled in chunks
    (engine_args._whole_prefills_on_cpu): a seed and 4,000 prompt tokens, then the server
    still answers."""
    text = "The chest radiograph shows a small left pleural effusion. " * 400
    response = client.post(
        "/v1/chat/completions", json={"messages": [user(text)], "max_tokens": 2, "seed": 1}
    )
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] > 2048
    after = client.post("/v1/chat/completions", json={"messages": [user("Hi")], "max_tokens": 1})
    assert after.status_code == 200
