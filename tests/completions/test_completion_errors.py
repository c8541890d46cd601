"""Malformed and impossible completion requests: a 4xx in OpenAI's error shape naming the param,
decided before the engine sees them; the server keeps serving."""

from __future__ import annotations

import pytest

from tests.utils.errors import assert_openai_error

COMPLETIONS = "/v1/completions"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"prompt": ""}, "prompt", None),
        ({"prompt": []}, "prompt", None),
        ({"prompt": [[]]}, "prompt", None),
        ({"prompt": ["fine", ""]}, "prompt", None),
        ({"prompt": [1, 2, 100000]}, "prompt", "invalid_token_id"),
        ({"prompt": [5, -1]}, "prompt", "invalid_token_id"),
        ({"prompt": [[5, 6], [7, 999999]]}, "prompt[1]", "invalid_token_id"),
        ({"prompt": ["a", 1]}, "prompt[1]", "invalid_type"),
        ({"prompt": {"text": "a"}}, "prompt", "invalid_type"),
        ({"prompt": [1.5]}, "prompt[0]", "invalid_type"),
        ({"prompt": ["x"] * 65}, "prompt", None),
        ({"prompt": "x", "n": 17}, "n", None),
        ({"prompt": "x", "n": 2, "temperature": 0}, "n", None),
        ({"prompt": "x", "max_tokens": 100000}, "max_tokens", None),
        ({"prompt": "x", "max_tokens": -1}, "max_tokens", None),
        ({"prompt": "x", "max_tokens": 0}, "echo", None),
        ({"prompt": "x", "max_tokens": "10"}, "max_tokens", "invalid_type"),
        ({"prompt": "x", "logprobs": 21}, "logprobs", None),
        ({"prompt": "x", "logprobs": True}, "logprobs", "invalid_type"),
        ({"prompt": "x", "temperature": 3}, "temperature", None),
        ({"prompt": "x", "stop": ""}, "stop", None),
        ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop", None),
        ({"prompt": "x", "seed": 2**64}, "seed", None),
        ({"prompt": "x", "min_tokens": 20}, "min_tokens", None),
        ({"prompt": "x", "max_tokens": 4, "min_tokens": 5}, "min_tokens", None),
        ({"prompt": "x", "suffix": " and more"}, "suffix", None),
        ({"prompt": "x", "best_of": 3}, "best_of", None),
        ({}, "prompt", None),
    ],
)
def test_bad_completion_requests_are_400(client, body, param, code):
    response = client.post(COMPLETIONS, json=body)
    error = assert_openai_error(response, 400, param=param, code=code)
    assert error["type"] == "invalid_request_error"


def test_unknown_model_is_404(client):
    response = client.post(COMPLETIONS, json={"prompt": "x", "model": "gpt-4"})
    error = assert_openai_error(response, 404, param="model", code="model_not_found")
    assert "lingshu-demo" in error["message"]


def test_a_text_prompt_over_the_context_is_refused_before_the_engine(client):
    # each "pleural " is a few tokens: far past the 8192-token context
    response = client.post(COMPLETIONS, json={"prompt": "pleural " * 20000})
    error = assert_openai_error(response, 400, param="prompt", code="context_length_exceeded")
    assert "8192" in error["message"]


def test_token_ids_as_long_as_the_context_are_refused(client):
    response = client.post(COMPLETIONS, json={"prompt": [[5] * 10, [5] * 8192]})
    error = assert_openai_error(response, 400, param="prompt[1]", code="context_length_exceeded")
    assert "8192 tokens" in error["message"]
    fits = client.post(COMPLETIONS, json={"prompt": [5] * 8191, "max_tokens": 1})
    assert fits.status_code == 200, fits.text


def test_errors_do_not_stop_a_stream_from_being_refused_cleanly(client):
    """A bad streaming request is a plain JSON 400, never a 200 stream holding an error."""
    response = client.post(COMPLETIONS, json={"prompt": [1, 100000], "stream": True})
    assert_openai_error(response, 400, param="prompt", code="invalid_token_id")


def test_body_that_is_not_json(client):
    response = client.post(
        COMPLETIONS, content=b"prompt=x", headers={"Content-Type": "application/json"}
    )
    assert_openai_error(response, 400)
    response = client.post(COMPLETIONS, content=b'{"prompt": "x"}')
    assert_openai_error(response, 415, code="unsupported_media_type")


def test_a_lone_surrogate_is_refused(client):
    response = client.post(
        COMPLETIONS,
        content=b'{"prompt": "a\\ud800b"}',
        headers={"Content-Type": "application/json"},
    )
    assert_openai_error(response, 400, param="prompt")
