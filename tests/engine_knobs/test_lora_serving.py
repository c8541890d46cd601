"""A LoRA adapter served beside the demo model on the CPU engine: listed, chosen by `model`,
and it changes what the model says."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.engine_knobs.conftest import ADAPTER, KnobsServer
from tests.utils.chat import CHAT, user
from tests.utils.errors import assert_openai_error
from tests.utils.images import image_data_url, image_part

# LoRA on the real engine: the `knobs` server, a process of its own (engine arguments differ).
pytestmark = pytest.mark.e2e

PROMPT = "<|im_start|>user\nIs the heart enlarged?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture
def http(knobs: KnobsServer) -> httpx.Client:
    with httpx.Client(base_url=knobs.server.base_url, timeout=120) as client:
        yield client


def greedy(http: httpx.Client, model: str, **body) -> dict:
    response = http.post(
        "/v1/completions",
        json={"model": model, "prompt": PROMPT, "max_tokens": 12, "temperature": 0, **body},
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_models_lists_the_adapter_with_its_base_as_parent(knobs: KnobsServer, http):
    models = http.get("/v1/models").json()["data"]
    assert [m["id"] for m in models] == ["lingshu-demo", ADAPTER]
    base, adapter = models
    assert base["parent"] is None
    assert adapter["parent"] == "lingshu-demo"
    assert adapter["root"] == str(knobs.adapter_dir.resolve())
    assert adapter["object"] == "model" and adapter["max_model_len"] == base["max_model_len"]
    # the adapter's files are part of its answers' configuration
    assert adapter["system_fingerprint"].startswith("fp_")
    assert adapter["system_fingerprint"] != base["system_fingerprint"]


def test_the_adapter_changes_the_greedy_answer(http):
    base = greedy(http, "lingshu-demo")
    adapted = greedy(http, ADAPTER)
    assert adapted["model"] == ADAPTER and base["model"] == "lingshu-demo"
    cards = {card["id"]: card for card in http.get("/v1/models").json()["data"]}
    assert adapted["system_fingerprint"] == cards[ADAPTER]["system_fingerprint"]
    assert base["system_fingerprint"] == cards["lingshu-demo"]["system_fingerprint"]
    assert adapted["choices"][0]["text"] != base["choices"][0]["text"]
    # each is stable: the adapter is applied to its own requests only
    assert greedy(http, ADAPTER)["choices"][0]["text"] == adapted["choices"][0]["text"]
    assert greedy(http, "lingshu-demo")["choices"][0]["text"] == base["choices"][0]["text"]


def test_base_and_adapter_requests_batched_together_stay_apart(http):
    base = greedy(http, "lingshu-demo")["choices"][0]["text"]
    adapted = greedy(http, ADAPTER)["choices"][0]["text"]
    batch = greedy(http, "lingshu-demo", prompt=[PROMPT] * 3)
    assert [c["text"] for c in batch["choices"]] == [base] * 3
    many = [greedy(http, ADAPTER, prompt=[PROMPT] * 2) for _ in range(2)]
    assert all(c["text"] == adapted for answer in many for c in answer["choices"])


def test_chat_with_an_image_through_the_adapter(http):
    messages = [user(image_part(image_data_url(224, 224)), "Describe the findings.")]
    answers = {}
    for model in ("lingshu-demo", ADAPTER):
        response = http.post(
            CHAT, json={"model": model, "messages": messages, "max_tokens": 8, "temperature": 0}
        )
        assert response.status_code == 200, response.text
        answers[model] = response.json()
    assert answers[ADAPTER]["model"] == ADAPTER
    assert (
        answers[ADAPTER]["usage"]["prompt_tokens"]
        == answers["lingshu-demo"]["usage"]["prompt_tokens"]
    )
    texts = {model: a["choices"][0]["message"]["content"] for model, a in answers.items()}
    assert texts[ADAPTER] != texts["lingshu-demo"]


def test_streaming_chat_reports_the_adapter(http):
    body = {"model": ADAPTER, "messages": [user("Findings?")], "max_tokens": 4, "stream": True}
    with http.stream("POST", CHAT, json=body) as response:
        assert response.status_code == 200
        chunks = [
            json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")
        ]
    assert chunks and all(chunk["model"] == ADAPTER for chunk in chunks)


def test_sdk_sees_and_uses_the_adapter(knobs: KnobsServer):
    sdk = openai.OpenAI(base_url=f"{knobs.server.base_url}/v1", api_key="x", max_retries=0)
    models = sdk.models.list().data
    assert [(m.id, m.model_extra.get("parent")) for m in models] == [
        ("lingshu-demo", None),
        (ADAPTER, "lingshu-demo"),
    ]
    completion = sdk.completions.create(model=ADAPTER, prompt=PROMPT, max_tokens=4)
    assert completion.model == ADAPTER
    with pytest.raises(openai.NotFoundError):
        sdk.completions.create(model="chest-xray-lora-v2", prompt=PROMPT, max_tokens=4)


def test_unknown_model_names_every_choice(http):
    response = http.post(CHAT, json={"model": "other-lora", "messages": [user("x")]})
    error = assert_openai_error(response, 404, param="model", code="model_not_found")
    assert "lingshu-demo" in error["message"] and ADAPTER in error["message"]


def test_tokenize_accepts_the_adapter_name(http):
    counted = http.post("/tokenize", json={"model": ADAPTER, "prompt": PROMPT})
    assert counted.status_code == 200
    assert counted.json()["count"] == greedy(http, ADAPTER)["usage"]["prompt_tokens"]
