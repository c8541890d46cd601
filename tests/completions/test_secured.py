"""Completions, tokenize and detokenize on the secured server: the same keys, rate limit and
audit log as chat, and no prompt text in the logs."""

from __future__ import annotations

import hashlib
import json
import time

import httpx
import pytest

from tests.conftest import FILE_KEYS
from tests.utils.chat import user
from tests.utils.errors import assert_openai_error
from tests.utils.images import data_url, encode, gradient_image, image_part

SECRET = "PATIENT-SECRET-5531 John Doe"
ROUTES = [
    ("/v1/completions", {"prompt": SECRET, "max_tokens": 2}),
    ("/tokenize", {"prompt": SECRET}),
    ("/detokenize", {"tokens": [1, 2, 3]}),
]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_a_key_is_required(secured, path, body):
    response = httpx.post(f"{secured.base_url}{path}", json=body, timeout=60)
    assert_openai_error(response, 401, code="invalid_api_key")
    wrong = httpx.post(f"{secured.base_url}{path}", json=body, headers=auth("sk-no"), timeout=60)
    assert_openai_error(wrong, 401, code="invalid_api_key")


def test_requests_are_audited_without_their_text(secured):
    png = encode(gradient_image(200, 160, seed=5531), "PNG")
    key = FILE_KEYS[33]
    with httpx.Client(base_url=secured.base_url, headers=auth(key), timeout=120) as http:
        for path, body in ROUTES:
            assert http.post(path, json=body).status_code == 200
        messages = [user(image_part(data_url(png)), SECRET)]
        counted = http.post("/tokenize", json={"messages": messages})
        assert counted.status_code == 200
    time.sleep(0.5)
    records = [json.loads(line) for line in secured.audit_path.read_text().splitlines()]
    ours = [r for r in records if r["route"] in {p for p, _ in ROUTES} and r["key_id"]]
    routes = {r["route"] for r in ours}
    assert routes == {"/v1/completions", "/tokenize", "/detokenize"}
    completion = next(r for r in ours if r["route"] == "/v1/completions")
    assert completion["prompt_tokens"] > 0 and completion["completion_tokens"] == 2
    image_records = [r for r in ours if r["route"] == "/tokenize" and r["images"]]
    (image,) = image_records[-1]["images"]
    assert image["sha256"] == hashlib.sha256(png).hexdigest()
    assert image_records[-1]["prompt_tokens"] == counted.json()["count"]
    assert SECRET not in secured.audit_path.read_text()
    assert SECRET not in secured.log_text()


def test_the_rate_limit_counts_tokenize_too(secured):
    key = FILE_KEYS[34]
    with httpx.Client(base_url=secured.base_url, headers=auth(key), timeout=60) as http:
        statuses = [http.post("/tokenize", json={"prompt": "x"}).status_code for _ in range(8)]
        assert statuses[:6] == [200] * 6
        assert 429 in statuses[6:]
        limited = http.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
    assert_openai_error(limited, 429, code="rate_limit_exceeded")
