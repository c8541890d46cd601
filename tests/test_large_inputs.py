"""Inputs that cannot fit are refused for what they cost to size, not to process: a huge text
is counted only until it overflows the context, an image's tokens come from its header, and the
server keeps answering its probes meanwhile."""

from __future__ import annotations

import time

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image
from transformers import AutoTokenizer

from lingshu_server.demo_model import ensure_demo_model
from tests.utils.chat import CHAT, in_thread, user
from tests.utils.errors import assert_openai_error
from tests.utils.images import data_url, encode, image_part
from tests.utils.tiers import api_pid


def worst_health_latency_while(client: httpx.Client, request: dict) -> tuple[httpx.Response, float]:
    """Send `request` and poll /health until it is answered; the slowest /health answer."""
    thread, outcome = in_thread(lambda: client.post(CHAT, json=request, timeout=300))
    worst = 0.0
    with httpx.Client(base_url=str(client.base_url), timeout=30) as probe:
        while thread.is_alive():
            started = time.perf_counter()
            assert probe.get("/health").status_code == 200
            worst = max(worst, time.perf_counter() - started)
            time.sleep(0.02)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"], worst


def test_a_30_mb_text_is_refused_without_stalling_the_server(client):
    text = "pleural effusion " * (30 * 1024 * 1024 // 17)
    response, worst = worst_health_latency_while(
        client, {"messages": [user(text)], "max_tokens": 4}
    )
    error = assert_openai_error(response, 400, code="context_length_exceeded")
    assert "more than" in error["message"]
    assert worst < 1.0, f"/health took {worst:.2f} s while the prompt was sized"


@pytest.mark.e2e
def test_the_largest_text_that_fits_still_works(client, server):
    limit = httpx.get(f"{server.base_url}/v1/models").json()["data"][0]["max_model_len"]
    tokenizer = AutoTokenizer.from_pretrained(str(ensure_demo_model()))
    per_phrase = len(tokenizer.encode("effusion " * 1000)) / 1000
    text = "effusion " * int((limit - 64) / per_phrase)  # the template adds a few dozen tokens
    answer = client.post(CHAT, json={"messages": [user(text)], "max_tokens": 2})
    assert answer.status_code == 200, answer.text
    prompt_tokens = answer.json()["usage"]["prompt_tokens"]
    assert limit - 100 < prompt_tokens < limit


def test_huge_images_are_refused_from_their_headers(client, server):
    """Four 12000x12000 PNGs (a few hundred KB each) would take 2.4 GB to decode; their token
    cost, read from the headers, already exceeds the context."""
    flat = encode(Image.fromarray(np.zeros((12000, 12000), dtype=np.uint8), "L"), "PNG")
    parts = [image_part(data_url(flat)) for _ in range(4)]
    process = psutil.Process(api_pid(server))
    before = process.memory_info().rss
    response = client.post(CHAT, json={"messages": [user(*parts)], "max_tokens": 2})
    assert_openai_error(response, 400, code="context_length_exceeded")
    grown = process.memory_info().rss - before
    assert grown < 300 * 1024 * 1024, f"the server grew by {grown / 2**20:.0f} MiB"
