"""The server sees, counts and answers exactly what the model card's own code does.

For each input, on both demo checkpoints, the same conversation goes to the server (through the
OpenAI wire format) and to the model card's recipe (transformers + qwen-vl-utils, float32,
greedy). The server's prompt token ids, as the engine saw them, must equal the recipe's
`input_ids` token for token; `usage.prompt_tokens` must equal their count; and the greedy tokens
must be the same. Pixels are compared in test_pixel_parity.py.

One documented exception: 16-bit grayscale. PIL's conversion, which the recipe uses, clips every
value above 255 to white (a 12-bit X-ray arrives almost blank); the server stretches the image's
own range to 8 bits first. The reference is given that 8-bit image, so everything after the
conversion is still checked against the recipe.
"""

from __future__ import annotations

import httpx
import pytest

from tests.parity.cases import CASES
from tests.utils.reference import ModelCardReference, to_openai

# Greedy tokens and the prompt the engine saw, on the real engine (the size-form checkpoint's
# server is a process of its own: another checkpoint).
pytestmark = pytest.mark.e2e

MAX_NEW_TOKENS = 8


def ask_server(base_url: str, messages: list[dict]) -> dict:
    body = {
        "model": "lingshu-demo",
        "messages": to_openai(messages),
        "temperature": 0,
        "max_tokens": MAX_NEW_TOKENS,
        "return_token_ids": True,
    }
    response = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def assert_parity(base_url: str, reference: ModelCardReference, case: str) -> None:
    sent, reference_messages = CASES[case]()
    expected = reference.run(reference_messages, MAX_NEW_TOKENS)
    answer = ask_server(base_url, sent)
    assert answer["prompt_token_ids"] == expected.input_ids
    assert answer["usage"]["prompt_tokens"] == len(expected.input_ids)
    choice = answer["choices"][0]
    assert choice["token_ids"] == expected.generated
    assert answer["usage"]["completion_tokens"] == len(expected.generated)
    text = reference.processor.tokenizer.decode(expected.generated, skip_special_tokens=True)
    # vLLM's detokenizer holds back an incomplete UTF-8 sequence at the end of the text (alone
    # it decodes to U+FFFD) and drops it when generation stops there; the ids above are equal.
    assert choice["message"]["content"] == text.removesuffix("\ufffd")


@pytest.mark.parametrize("case", sorted(CASES))
def test_demo_checkpoint_matches_the_model_card(server, demo_reference, case):
    assert_parity(server.base_url, demo_reference, case)


@pytest.mark.parametrize("case", sorted(CASES))
def test_size_form_checkpoint_matches_the_model_card(small_server, small_reference, case):
    assert_parity(small_server.base_url, small_reference, case)


def test_the_budget_in_force_is_logged_with_its_source(small_server):
    log = small_server.log_text()
    assert "image budget" in log
    assert "401408" in log and "size.shortest_edge/longest_edge" in log
