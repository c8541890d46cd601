"""The biggest requests that fit still work, and /health stays under 1 s while they are
processed: the longest text prompt that fits the context and the most image tokens that fit.
(The biggest bodies that do not fit are corpus cases: refused quickly, for context length.)

Both tiers: on the fake engine the server's own work (tokenizing, decoding and resizing images,
counting the context) keeps /health responsive and draws the line at the context length; on the
real engine, the engine also accepts the biggest prompt the server admits."""

from __future__ import annotations

import time

from tests.reliability.checks import assert_error_shape, assert_well_formed
from tests.reliability.client import HEALTH_BOUND_S, Target
from tests.reliability.corpus import user
from tests.reliability.server_config import CONTEXT_TOKENS, MAX_IMAGES
from tests.utils.images import image_data_url, image_part, tokens_for
from tests.utils.tiers import IN_BOTH_TIERS

WORD = "chest "


def prompt_tokens(target: Target, repeats: int) -> int:
    response = target.chat({**user(WORD * repeats), "max_tokens": 1})
    assert response.status_code == 200, response.text[:300]
    return response.json()["usage"]["prompt_tokens"]


def timed(target: Target, body: dict, where: str):  # noqa: ANN201
    def send():  # noqa: ANN202
        started = time.perf_counter()
        return target.chat(body), time.perf_counter() - started

    return target.while_watching_health(send, where)


@IN_BOTH_TIERS
def test_the_longest_prompt_that_fits_is_answered(target: Target, tier: str):
    base = prompt_tokens(target, 100)
    per_word = (prompt_tokens(target, 1100) - base) / 1000
    repeats = 100 + int((CONTEXT_TOKENS - 1 - base) / per_word)
    (response, _), worst = timed(
        target, {**user(WORD * repeats), "max_tokens": 1}, "longest prompt"
    )
    while response.status_code == 400 and repeats > 0:  # the estimate was a little long
        repeats -= 8
        (response, _), worst_again = timed(
            target, {**user(WORD * repeats), "max_tokens": 1}, "longest prompt"
        )
        worst = max(worst, worst_again)
    assert response.status_code == 200, response.text[:300]
    assert_well_formed(response)
    assert response.json()["usage"]["prompt_tokens"] > 0.98 * CONTEXT_TOKENS
    assert worst < HEALTH_BOUND_S
    over = target.chat({**user(WORD * (repeats + 64)), "max_tokens": 1})
    assert over.status_code == 400
    assert_error_shape(over, "context_length_exceeded", "messages")


@IN_BOTH_TIERS
def test_the_most_image_tokens_that_fit_are_answered(target: Target, tier: str):
    side = 28
    while MAX_IMAGES * tokens_for(side + 28, side + 28) < CONTEXT_TOKENS - 128:
        side += 28
    images = [image_part(image_data_url(side, side, seed=i)) for i in range(MAX_IMAGES)]
    body = {**user([*images, {"type": "text", "text": "Findings?"}]), "max_tokens": 1}
    (response, elapsed), worst = timed(target, body, f"{MAX_IMAGES} images of {side} px")
    assert response.status_code == 200, response.text[:300]
    assert_well_formed(response)
    assert response.json()["usage"]["prompt_tokens"] > MAX_IMAGES * tokens_for(side, side)
    assert worst < HEALTH_BOUND_S
