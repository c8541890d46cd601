"""POST /v1/completions: prompt forms, choices, stop, logprobs, echo, streaming, usage, and the
same accounting as chat. What the engine decides (greedy and seeded text, stop strings, its
logprobs and token counts) is `e2e`; the shapes run on the fake engine."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.utils.chat import CHAT

COMPLETIONS = "/v1/completions"
CHAT_PROMPT = "<|im_start|>user\nDescribe a normal chest X-ray.<|im_end|>\n<|im_start|>assistant\n"


def complete(client: httpx.Client, **body) -> dict:
    response = client.post(COMPLETIONS, json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["object"] == "text_completion"
    assert answer["id"].startswith("cmpl-")
    return answer


def events(client: httpx.Client, **body) -> list:
    """Every SSE payload of a completions stream, '[DONE]' kept as a string."""
    found: list = []
    with client.stream("POST", COMPLETIONS, json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line:
                assert line.startswith("data: "), line
                payload = line[len("data: ") :]
                found.append(payload if payload == "[DONE]" else json.loads(payload))
    return found


def streamed_texts(chunks: list) -> dict[int, str]:
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    return texts


def tokens_of(client: httpx.Client, text: str) -> list[int]:
    response = client.post("/tokenize", json={"prompt": text})
    assert response.status_code == 200, response.text
    return response.json()["tokens"]


@pytest.mark.e2e
def test_a_string_prompt_gets_text_and_usage(client):
    answer = complete(client, prompt=CHAT_PROMPT, max_tokens=8, ignore_eos=True)
    (choice,) = answer["choices"]
    assert choice["index"] == 0 and isinstance(choice["text"], str) and choice["text"]
    assert choice["finish_reason"] == "length"
    assert choice["logprobs"] is None
    assert answer["model"] == "lingshu-demo"
    assert answer["usage"] == {
        "prompt_tokens": len(tokens_of(client, CHAT_PROMPT)),
        "completion_tokens": 8,
        "total_tokens": len(tokens_of(client, CHAT_PROMPT)) + 8,
        # shorter than one KV block: nothing of it can be in the prefix cache
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_max_tokens_defaults_to_sixteen(client):
    answer = complete(client, prompt="The heart", ignore_eos=True)
    assert answer["usage"]["completion_tokens"] == 16


@pytest.mark.e2e
def test_token_ids_are_the_same_prompt_as_their_text(client):
    text = complete(client, prompt=CHAT_PROMPT, max_tokens=8, temperature=0)
    ids = complete(client, prompt=tokens_of(client, CHAT_PROMPT), max_tokens=8, temperature=0)
    assert ids["choices"][0]["text"] == text["choices"][0]["text"]
    assert ids["usage"] == text["usage"]


@pytest.mark.e2e
def test_several_prompts_each_get_their_own_choices(client):
    prompts = ["The lungs are", "No pleural effusion", "Impression:"]
    alone = [complete(client, prompt=p, max_tokens=6, temperature=0) for p in prompts]
    together = complete(client, prompt=prompts, max_tokens=6, temperature=0)
    assert [c["index"] for c in together["choices"]] == [0, 1, 2]
    assert [c["text"] for c in together["choices"]] == [a["choices"][0]["text"] for a in alone]
    assert together["usage"]["prompt_tokens"] == sum(a["usage"]["prompt_tokens"] for a in alone)
    as_ids = complete(
        client, prompt=[tokens_of(client, p) for p in prompts], max_tokens=6, temperature=0
    )
    assert [c["text"] for c in as_ids["choices"]] == [c["text"] for c in together["choices"]]


@pytest.mark.e2e
def test_n_choices_per_prompt_are_numbered_prompt_by_prompt(client):
    answer = complete(
        client, prompt=["Findings:", "Impression:"], n=3, max_tokens=4, temperature=1.0,
        ignore_eos=True,
    )  # fmt: skip
    assert [c["index"] for c in answer["choices"]] == list(range(6))
    assert answer["usage"]["completion_tokens"] == 6 * 4
    # choice i*n+j belongs to prompt i: with the same seed, each prompt's choices are its own
    seeded = [complete(client, prompt=p, n=3, max_tokens=4, temperature=1.0, seed=11)
              for p in ("Findings:", "Impression:")]  # fmt: skip
    both = complete(
        client, prompt=["Findings:", "Impression:"], n=3, max_tokens=4, temperature=1.0, seed=11
    )
    expected = [c["text"] for answer in seeded for c in answer["choices"]]
    assert [c["text"] for c in both["choices"]] == expected


@pytest.mark.e2e
def test_seed_makes_sampling_repeatable(client):
    body = {"prompt": CHAT_PROMPT, "max_tokens": 8, "temperature": 1.0, "seed": 1234}
    first, second = complete(client, **body), complete(client, **body)
    assert first["choices"][0]["text"] == second["choices"][0]["text"]


@pytest.mark.e2e
def test_stop_cuts_the_text_before_the_stop_string(client):
    free = complete(client, prompt=CHAT_PROMPT, max_tokens=24, temperature=0, ignore_eos=True)
    text = free["choices"][0]["text"]
    stop = text[len(text) // 2 :][:3]
    assert stop.strip(), text
    cut = complete(client, prompt=CHAT_PROMPT, max_tokens=24, temperature=0, stop=[stop])
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert cut["choices"][0]["text"] == text[: text.index(stop)]


@pytest.mark.e2e
def test_logprobs_in_the_legacy_shape(client):
    answer = complete(client, prompt=CHAT_PROMPT, max_tokens=8, logprobs=3, ignore_eos=True)
    (choice,) = answer["choices"]
    logprobs = choice["logprobs"]
    assert set(logprobs) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert len(logprobs["tokens"]) == 8
    for token, value, top in zip(
        logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"], strict=True
    ):
        assert value <= 0
        assert top[token] == value  # the chosen token is among the alternatives
        # the three likeliest, and the chosen one if not among them (tokens of the same text,
        # such as partial UTF-8 bytes, share a key)
        assert 1 <= len(top) <= 4
        assert max(top.values()) >= value
    offsets = [0]
    for token in logprobs["tokens"][:-1]:
        offsets.append(offsets[-1] + len(token))
    assert logprobs["text_offset"] == offsets


def test_echo_returns_the_prompt_first_with_its_logprobs(client):
    prompt_ids = tokens_of(client, "No acute findings.")
    answer = complete(
        client, prompt="No acute findings.", max_tokens=4, echo=True, logprobs=1, ignore_eos=True
    )
    choice = answer["choices"][0]
    assert choice["text"].startswith("No acute findings.")
    logprobs = choice["logprobs"]
    assert len(logprobs["tokens"]) == len(prompt_ids) + 4
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    assert all(lp is not None for lp in logprobs["token_logprobs"][1:])
    assert "".join(logprobs["tokens"][: len(prompt_ids)]) == "No acute findings."
    assert logprobs["text_offset"][len(prompt_ids)] == len("No acute findings.")


@pytest.mark.e2e
def test_echo_with_no_tokens_scores_the_prompt(client):
    prompt_ids = tokens_of(client, "No acute cardiopulmonary process.")
    answer = complete(
        client, prompt="No acute cardiopulmonary process.", max_tokens=0, echo=True, logprobs=0
    )
    choice = answer["choices"][0]
    assert choice["text"] == "No acute cardiopulmonary process."
    assert answer["usage"]["completion_tokens"] == 0
    assert len(choice["logprobs"]["token_logprobs"]) == len(prompt_ids)
    # the same scores as the first tokens of an echo that also generates
    longer = complete(
        client, prompt="No acute cardiopulmonary process.", max_tokens=2, echo=True, logprobs=0
    )
    scores = longer["choices"][0]["logprobs"]["token_logprobs"][: len(prompt_ids)]
    assert choice["logprobs"]["token_logprobs"] == pytest.approx(scores, abs=1e-4)


def test_echo_of_token_ids_is_their_text(client):
    ids = tokens_of(client, "Mild cardiomegaly.")
    answer = complete(client, prompt=ids, max_tokens=2, echo=True)
    assert answer["choices"][0]["text"].startswith("Mild cardiomegaly.")


@pytest.mark.e2e
def test_return_token_ids(client):
    ids = tokens_of(client, CHAT_PROMPT)
    answer = complete(client, prompt=CHAT_PROMPT, max_tokens=5, return_token_ids=True)
    choice = answer["choices"][0]
    assert choice["prompt_token_ids"] == ids
    assert len(choice["token_ids"]) == answer["usage"]["completion_tokens"]
    plain = complete(client, prompt=CHAT_PROMPT, max_tokens=5)
    assert "token_ids" not in plain["choices"][0] and "prompt_token_ids" not in plain["choices"][0]


@pytest.mark.e2e
def test_stream_events_are_openai_text_completion_chunks(client):
    greedy = complete(client, prompt=CHAT_PROMPT, max_tokens=10, temperature=0)
    chunks = events(client, prompt=CHAT_PROMPT, max_tokens=10, temperature=0)
    assert chunks[-1] == "[DONE]"
    body = chunks[:-1]
    assert all(c["object"] == "text_completion" for c in body)
    assert len({c["id"] for c in body}) == 1 and body[0]["id"].startswith("cmpl-")
    assert all("usage" not in c for c in body)  # no usage key unless asked for
    assert streamed_texts(body) == {0: greedy["choices"][0]["text"]}
    finishes = [ch["finish_reason"] for c in body for ch in c["choices"] if ch["finish_reason"]]
    assert finishes == [greedy["choices"][0]["finish_reason"]]
    assert body[-1]["choices"][0]["finish_reason"] is not None


def test_stream_with_usage_n_and_prompts(client):
    chunks = events(
        client,
        prompt=["Findings:", "Impression:"],
        n=2,
        max_tokens=3,
        temperature=1.0,
        ignore_eos=True,
        stream_options={"include_usage": True},
    )
    assert chunks[-1] == "[DONE]"
    *body, usage = chunks[:-1]
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 4 * 3
    assert all(c["usage"] is None for c in body)  # "usage": null on the others, as OpenAI
    assert set(streamed_texts(body)) == {0, 1, 2, 3}
    finished = sorted(ch["index"] for c in body for ch in c["choices"] if ch["finish_reason"])
    assert finished == [0, 1, 2, 3]


def test_stream_with_echo_and_logprobs(client):
    chunks = events(
        client, prompt="Impression:", max_tokens=4, echo=True, logprobs=1, ignore_eos=True
    )[:-1]
    first = chunks[0]["choices"][0]
    assert first["text"].startswith("Impression:")
    assert first["logprobs"]["token_logprobs"][0] is None
    tokens = [t for c in chunks for t in (c["choices"][0]["logprobs"] or {}).get("tokens", [])]
    offsets = [
        o for c in chunks for o in (c["choices"][0]["logprobs"] or {}).get("text_offset", [])
    ]
    assert len(tokens) == len(offsets) == len(tokens_of(client, "Impression:")) + 4
    # offsets run on across chunks, from the start of the echoed prompt
    assert offsets[0] == 0 and offsets == sorted(offsets)
    assert offsets[len(tokens_of(client, "Impression:"))] == len("Impression:")


def test_completions_are_counted_and_logged_like_chat(server, client):
    complete(client, prompt="The aorta", max_tokens=2)
    metrics = client.get("/metrics").text
    assert 'lingshu_requests_total{route="/v1/completions",status="200"}' in metrics
    records = [
        json.loads(line)
        for line in server.log_text().splitlines()
        if line.startswith("{") and '"route": "/v1/completions"' in line
    ]
    assert any(r.get("prompt_tokens") and r.get("completion_tokens") == 2 for r in records)
    assert "The aorta" not in server.log_text()  # prompt text is never logged


@pytest.mark.e2e
def test_chat_and_completions_share_the_prompt_format(client):
    """The same conversation as chat messages and as a raw prompt in the model's format gives
    the same greedy answer (the chat template writes exactly that prompt)."""
    question = "Describe a normal chest X-ray."
    chat = client.post(
        CHAT,
        json={
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 8,
            "temperature": 0,
        },
    ).json()
    system = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    raw = complete(client, prompt=system + CHAT_PROMPT, max_tokens=8, temperature=0)
    assert raw["usage"]["prompt_tokens"] == chat["usage"]["prompt_tokens"]
    assert raw["choices"][0]["text"] == chat["choices"][0]["message"]["content"]
