"""/tokenize and /detokenize in vLLM's shapes. For chat messages, images and videos included,
the count and the ids equal what the same chat request reports (`usage.prompt_tokens`,
`prompt_token_ids`): the very tokens the engine saw."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydicom.data import get_testdata_file

from tests.conftest import ImageSources
from tests.utils.chat import CHAT, user
from tests.utils.errors import assert_openai_error
from tests.utils.function_tools import WEATHER
from tests.utils.images import data_url, image_data_url, image_part, tokens_for
from tests.utils.logs import without_request_ids
from tests.utils.tiers import IN_BOTH_TIERS
from tests.utils.videos import clip_url, video_part

WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Forecast", "parameters": WEATHER},
}


def tokenize(client: httpx.Client, **body) -> dict:
    response = client.post("/tokenize", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def chat_prompt(client: httpx.Client, messages: list, **extra) -> tuple[int, list[int]]:
    """(usage.prompt_tokens, prompt_token_ids) of a chat request: what the engine saw."""
    response = client.post(
        CHAT, json={"messages": messages, "max_tokens": 1, "return_token_ids": True, **extra}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return body["usage"]["prompt_tokens"], body["prompt_token_ids"]


def dicom_url(name: str) -> str:
    return data_url(Path(get_testdata_file(name)).read_bytes(), "application/dicom")


def test_a_prompt_in_vllms_shape(client):
    body = tokenize(client, prompt="No acute findings.", return_token_strs=True)
    assert set(body) == {"count", "max_model_len", "tokens", "token_strs"}
    assert body["count"] == len(body["tokens"]) == len(body["token_strs"]) > 0
    assert body["max_model_len"] == 8192
    plain = tokenize(client, prompt="No acute findings.")
    assert plain["token_strs"] is None and plain["tokens"] == body["tokens"]
    back = client.post("/detokenize", json={"tokens": body["tokens"]}).json()
    assert back == {"prompt": "No acute findings."}


def test_special_tokens_in_a_prompt_are_single_tokens(client):
    body = tokenize(client, prompt="<|im_start|>user\n", return_token_strs=True)
    assert body["token_strs"][0] == "<|im_start|>"
    assert tokenize(client, prompt="", add_special_tokens=True)["count"] == 0


@pytest.mark.e2e
def test_the_prompt_count_is_what_completions_use(client):
    prompt = "Heart size is normal. The lungs are clear."
    counted = tokenize(client, prompt=prompt)
    answer = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 1}).json()
    assert answer["usage"]["prompt_tokens"] == counted["count"]


@pytest.mark.parametrize(
    "parts",
    [
        pytest.param(["What is the normal heart size?"], id="text"),
        pytest.param([image_part(image_data_url(448, 336)), "Describe."], id="png"),
        pytest.param(
            [image_part(image_data_url(900, 700), detail="low"), "Describe."], id="detail-low"
        ),
        pytest.param(
            [
                image_part(image_data_url(640, 480, fmt="JPEG"), max_pixels=200_000),
                image_part(image_data_url(300, 1200, seed=3)),
                "Compare.",
            ],
            id="two-images-max-pixels",
        ),
        pytest.param(
            [image_part(dicom_url("CT_small.dcm"), dicom={"window": "lung"}), "Findings?"],
            id="dicom",
        ),
        pytest.param([image_part(image_data_url(20, 20)), "Tiny."], id="tiny-upscaled"),
        pytest.param([video_part(clip_url(160, 120, 20, fps=10)), "Motion?"], id="video"),
    ],
)
@pytest.mark.e2e
def test_chat_messages_count_as_the_chat_request_does(client, parts):
    messages = [{"role": "system", "content": "You are a radiologist."}, user(*parts)]
    counted = tokenize(client, messages=messages)
    prompt_tokens, prompt_ids = chat_prompt(client, messages)
    assert counted["count"] == prompt_tokens
    assert counted["tokens"] == prompt_ids


def test_an_image_costs_its_visual_tokens(client):
    text_only = tokenize(client, messages=[user("Describe.")])["count"]
    with_image = tokenize(
        client,
        messages=[user(image_part(image_data_url(448, 336)), "Describe.")],
        return_token_strs=True,
    )
    # the image's tokens plus <|vision_start|> and <|vision_end|>
    assert with_image["count"] == text_only + tokens_for(448, 336) + 2
    assert with_image["token_strs"].count("<|image_pad|>") == tokens_for(448, 336)


@pytest.mark.e2e
def test_images_from_allowed_sources_and_earlier_turns(client, image_sources: ImageSources):
    messages = [
        user(image_part(f"{image_sources.http_origin}/xray.png"), "First view."),
        {"role": "assistant", "content": "Noted."},
        user(image_part(f"file://{image_sources.local_dir}/xray.png"), "Second view?"),
    ]
    counted = tokenize(client, messages=messages)
    assert counted["count"] == chat_prompt(client, messages)[0]


def test_generation_prompt_options(client):
    messages = [user("Is there an effusion?")]
    default = tokenize(client, messages=messages, return_token_strs=True)
    without = tokenize(client, messages=messages, add_generation_prompt=False)
    # the generation prompt is <|im_start|>assistant\n
    assert default["tokens"][: without["count"]] == without["tokens"]
    tail = client.post("/detokenize", json={"tokens": default["tokens"][without["count"] :]})
    assert tail.json()["prompt"] == "<|im_start|>assistant\n"
    prefill = [*messages, {"role": "assistant", "content": "There is a small"}]
    open_turn = tokenize(client, messages=prefill, continue_final_message=True)
    text = client.post("/detokenize", json={"tokens": open_turn["tokens"]}).json()["prompt"]
    assert text.endswith("<|im_start|>assistant\nThere is a small")


def test_tokenize_is_counted_and_never_logs_the_text(server, client):
    tokenize(client, messages=[user("Secret patient history 90317.")])
    metrics = client.get("/metrics").text
    assert 'lingshu_requests_total{route="/tokenize",status="200"}' in metrics
    assert "90317" not in without_request_ids(server.log_text())


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({}, None, None),
        ({"prompt": "x", "messages": [user("x")]}, None, None),
        ({"messages": []}, "messages", None),
        ({"prompt": 5}, "prompt", "invalid_type"),
        ({"prompt": "x", "add_generation_prompt": True}, None, None),
        (
            {
                "messages": [user("x")],
                "add_generation_prompt": True,
                "continue_final_message": True,
            },
            None,
            None,
        ),
        ({"messages": [user("x")], "chat_template": "{{ messages }}"}, "chat_template", None),
        ({"messages": [user("x")], "tools": [{"type": "function"}]}, "tools[0].function", None),
        ({"prompt": "x", "tools": [WEATHER_TOOL]}, None, None),
        (
            {"messages": [user(image_part("data:image/png;base64,AAAA"))]},
            "messages[0].content[0].image_url",
            None,
        ),
        (
            {"messages": [user(*[image_part(image_data_url(56, 56, seed=i)) for i in range(5)])]},
            "messages",
            "too_many_images",
        ),
        (
            {"messages": [user(image_part("https://example.org/x.png"))]},
            "messages[0].content[0].image_url",
            None,
        ),
    ],
)
def test_bad_tokenize_requests_are_400(client, body, param, code):
    assert_openai_error(client.post("/tokenize", json=body), 400, param=param, code=code)


@IN_BOTH_TIERS
def test_tools_are_counted_as_the_chat_sends_them(client, tier):
    """The same prompt builder: the tools section the template writes, every token of it."""
    messages = [user("Weather in Oslo for three days?")]
    counted = tokenize(client, messages=messages, tools=[WEATHER_TOOL])
    prompt_tokens, prompt_ids = chat_prompt(
        client, messages, tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert counted["tokens"] == prompt_ids and counted["count"] == prompt_tokens
    assert counted["count"] > tokenize(client, messages=messages)["count"] + 50


def test_a_chat_over_the_context_is_refused_as_the_chat_would(client):
    messages = [user(image_part(image_data_url(3000, 3000)), "pleural " * 3000)]
    tokenized = client.post("/tokenize", json={"messages": messages})
    chat = client.post(CHAT, json={"messages": messages, "max_tokens": 1})
    assert_openai_error(tokenized, 400, code="context_length_exceeded")
    assert_openai_error(chat, 400, code="context_length_exceeded")
    assert tokenized.json()["error"]["message"] == chat.json()["error"]["message"]


@pytest.mark.parametrize(
    ("tokens", "code"),
    [([1, 100000], "invalid_token_id"), ([-1], "invalid_token_id"), ("abc", "invalid_type")],
)
def test_bad_detokenize_requests_are_400(client, tokens, code):
    response = client.post("/detokenize", json={"tokens": tokens})
    assert_openai_error(response, 400, param="tokens", code=code)


def test_unknown_model_is_404_on_both(client):
    for path, body in (("/tokenize", {"prompt": "x"}), ("/detokenize", {"tokens": [1]})):
        response = client.post(path, json={**body, "model": "nope"})
        assert_openai_error(response, 404, param="model", code="model_not_found")
