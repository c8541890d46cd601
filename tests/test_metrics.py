"""`GET /metrics` after real requests: every series exists and moves by the right amount (the
engine's own `vllm:` series on the real engine, `e2e`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydicom.data import get_testdata_file

from lingshu_server import __version__
from tests.utils.images import data_url, encode, gradient_image, image_part
from tests.utils.in_process_care import slow_steps
from tests.utils.metrics import scrape, value

CHAT = "/v1/chat/completions"


def chat(client: httpx.Client, content, **params) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 3, **params}
    return client.post(CHAT, json=body)


def settle(client: httpx.Client) -> dict:
    """Scrape once the server's bookkeeping after the last response has run."""
    time.sleep(0.3)
    return scrape(client)


def png_request(client: httpx.Client) -> tuple[bytes, dict, Callable[..., float]]:
    """(the PNG, the answer's usage, the change of a series) for one chat request with a PNG."""
    png = encode(gradient_image(280, 224, seed=5), "PNG")
    before = scrape(client)
    response = chat(client, [image_part(data_url(png)), {"type": "text", "text": "Findings?"}])
    assert response.status_code == 200
    usage = response.json()["usage"]
    after = settle(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    return png, usage, delta


def assert_our_series_moved(png: bytes, delta: Callable[..., float]) -> None:
    ok = {"route": CHAT, "status": "200"}
    assert delta("lingshu_requests_total", **ok) == 1
    assert delta("lingshu_request_duration_seconds_count", route=CHAT) == 1
    assert delta("lingshu_preprocess_seconds_count") == 1
    assert delta("lingshu_image_preprocess_seconds_count", format="PNG") == 1
    assert delta("lingshu_image_preprocess_seconds_sum", format="PNG") > 0
    assert delta("lingshu_request_image_bytes_sum") == len(png)
    assert delta("lingshu_request_image_pixels_sum") == 280 * 224
    assert delta("lingshu_request_image_tokens_sum") == (280 // 28) * (224 // 28)


def test_png_request_moves_our_series_by_their_amount(client):
    png, _, delta = png_request(client)
    assert_our_series_moved(png, delta)
    after = scrape(client)
    for gauge in ("lingshu_requests_in_flight", "lingshu_requests_queued"):
        assert any(name == gauge for name, _ in after), gauge


@pytest.mark.e2e
def test_png_request_moves_every_series_by_its_amount(client):
    png, usage, delta = png_request(client)
    assert_our_series_moved(png, delta)
    # the engine's own metrics, from its registry
    assert delta("vllm:request_success_total") == 1
    assert delta("vllm:prompt_tokens_total") == usage["prompt_tokens"]
    assert delta("vllm:generation_tokens_total") == usage["completion_tokens"]
    assert delta("vllm:time_to_first_token_seconds_count") == 1
    assert delta("vllm:e2e_request_latency_seconds_count") == 1
    assert delta("vllm:request_queue_time_seconds_count") == 1
    after = scrape(client)
    for gauge in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "lingshu_requests_in_flight",
        "lingshu_requests_queued",
    ):
        assert any(name == gauge for name, _ in after), gauge


def test_dicom_counts_under_its_own_format(client):
    dicom = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    before = scrape(client)
    part = image_part(data_url(dicom, "application/dicom"))
    response = chat(client, [part, {"type": "text", "text": "CT?"}])
    assert response.status_code == 200
    after = settle(client)
    key = ("lingshu_image_preprocess_seconds_count", (("format", "DICOM"),))
    assert after[key] - before.get(key, 0) == 1


def test_rejections_and_disconnects_are_counted(server, client):
    before = scrape(client)
    assert client.post(CHAT, json={"messages": []}).status_code == 400
    assert chat(client, [image_part("data:image/png;base64,AAAA")]).status_code == 400
    body = {
        "messages": [{"role": "user", "content": "Long report."}],
        "max_tokens": 2000,
        "ignore_eos": True,
        "stream": True,
    }
    with slow_steps(server, 0.05), client.stream("POST", CHAT, json=body) as response:
        lines = response.iter_lines()
        next(lines)
        next(lines)
    after = settle(client)
    bad = value(after, "lingshu_rejected_requests_total", reason="bad_input") - value(
        before, "lingshu_rejected_requests_total", reason="bad_input"
    )
    assert bad == 2
    assert (
        value(after, "lingshu_requests_total", route=CHAT, status="400")
        - value(before, "lingshu_requests_total", route=CHAT, status="400")
        == 2
    )
    disconnects = value(after, "lingshu_client_disconnects_total") - value(
        before, "lingshu_client_disconnects_total"
    )
    assert disconnects == 1
    assert value(after, "vllm:num_requests_running") == 0


def test_health_state_build_info_and_bounded_labels(client):
    samples = scrape(client)
    assert value(samples, "lingshu_engine_healthy") == 1
    assert value(samples, "lingshu_engine_loading") == 0
    info = [labels for name, labels in samples if name == "lingshu_build_info"]
    assert dict(info[0]) == {
        "version": __version__,
        "vllm_version": "0.32.0",
        "model": "lingshu-demo",
        "tensor_parallel_size": "1",
    }
    client.get("/no/such/route/with-an-id-12345")
    samples = scrape(client)
    routes = {
        dict(labels).get("route") for name, labels in samples if name == "lingshu_requests_total"
    }
    assert "other" in routes
    assert all(r is None or r.startswith("/") or r == "other" for r in routes)
    assert not any("12345" in str(labels) for _, labels in samples)
