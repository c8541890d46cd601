"""Malformed requests get OpenAI-shaped 4xx errors and the server keeps serving."""

from __future__ import annotations

import base64

import pytest

from tests.utils.errors import assert_openai_error
from tests.utils.images import data_url, encode, gradient_image, image_data_url, image_part


def user_with(part: dict) -> list:
    return [{"role": "user", "content": [part, {"type": "text", "text": "Findings?"}]}]


def post(client, body):
    return client.post("/v1/chat/completions", json=body)


def test_unknown_model_is_404(client):
    error = assert_openai_error(
        post(client, {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        404,
        param="model",
        code="model_not_found",
    )
    assert "gpt-4o" in error["message"]


def test_invalid_base64_is_400(client):
    part = image_part("data:image/png;base64,@@@not-base64@@@")
    assert_openai_error(
        post(client, {"messages": user_with(part)}),
        400,
        param="messages[0].content[0].image_url",
        code="invalid_base64",
    )


def test_non_image_payload_is_400(client):
    payload = base64.b64encode(b"%PDF-1.4 this is not an image at all").decode()
    part = image_part(f"data:image/png;base64,{payload}")
    error = assert_openai_error(
        post(client, {"messages": user_with(part)}),
        400,
        param="messages[0].content[0].image_url",
        code="invalid_image",
    )
    assert "image" in error["message"]


def test_truncated_png_is_400(client):
    png = encode(gradient_image(256, 256), "PNG")
    truncated = data_url(png[: len(png) // 2])
    assert_openai_error(
        post(client, {"messages": user_with(image_part(truncated))}), 400, code="invalid_image"
    )


def test_remote_url_off_the_allow_list_is_refused(client):
    part = image_part("https://example.org/xray.png")
    assert_openai_error(
        post(client, {"messages": user_with(part)}), 400, code="image_url_not_allowed"
    )


def test_missing_messages_is_400(client):
    assert_openai_error(post(client, {"model": "lingshu-demo"}), 400, param="messages")


def test_empty_messages_is_400(client):
    assert_openai_error(post(client, {"messages": []}), 400, param="messages")


def test_wrong_type_for_temperature_is_400(client):
    body = {"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}
    assert_openai_error(post(client, body), 400, param="temperature")


def test_out_of_range_parameter_is_400(client):
    body = {"messages": [{"role": "user", "content": "hi"}], "top_p": 3}
    assert_openai_error(post(client, body), 400, param="top_p")


def test_bad_content_part_names_its_param(client):
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}
    assert_openai_error(post(client, body), 400, param="messages[0].content[0].image_url.url")


def test_body_not_json_is_400(client):
    response = client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_openai_error(response, 400)


def test_max_tokens_over_cap_is_400(client):
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6}
    assert_openai_error(post(client, body), 400, param="max_tokens")


def test_too_many_images_is_400(client):
    parts = [image_part(image_data_url(56, 56, seed=i)) for i in range(5)]
    body = {"messages": [{"role": "user", "content": parts}]}
    assert_openai_error(post(client, body), 400, param="messages", code="too_many_images")


def test_prompt_longer_than_context_is_400(client):
    long_text = "chest " * 9000  # the demo serves a context of 8192 tokens
    body = {"messages": [{"role": "user", "content": long_text}], "max_tokens": 4}
    assert_openai_error(post(client, body), 400, code="context_length_exceeded")
    stream = {**body, "stream": True}
    assert_openai_error(post(client, stream), 400, code="context_length_exceeded")


def test_unknown_route_and_method_use_error_shape(client):
    assert_openai_error(client.get("/v1/nothing-here"), 404)
    assert_openai_error(client.get("/v1/chat/completions"), 405)


@pytest.mark.parametrize("stream", [False, True])
def test_server_keeps_serving_after_bad_requests(client, stream):
    post(client, {"messages": user_with(image_part("data:image/png;base64,AAAA"))})
    post(client, {"messages": "nope"})
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": stream}
    response = post(client, body)
    assert response.status_code == 200
    assert client.get("/health").status_code == 200
