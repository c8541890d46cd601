"""Video input end to end on the session server (default video settings): the OpenAI SDK and
httpx, every container, the cine loop, per-request options, the opt-in sources, and the token
count the engine saw. Parity with the model card's recipe is in tests/parity."""

from __future__ import annotations

import httpx
import pytest

from tests.utils.chat import CHAT, chat, sse_events, user
from tests.utils.errors import assert_openai_error
from tests.utils.videos import (
    cine_loop,
    clip,
    clip_url,
    data_url,
    expected_tokens,
    video_pad_id,
    video_part,
)

PAD = video_pad_id()


def pads(answer: dict) -> int:
    return answer["prompt_token_ids"].count(PAD)


def ask(client: httpx.Client, *parts, **params) -> dict:
    answer = chat(
        client, [user(*parts)], max_tokens=4, temperature=0, return_token_ids=True, **params
    )
    assert answer["usage"]["prompt_tokens"] == len(answer["prompt_token_ids"])
    return answer


@pytest.mark.e2e  # the token count the engine saw
def test_openai_sdk_sends_a_clip_and_the_usage_counts_its_tokens(sdk, server):
    completion = sdk.chat.completions.create(
        model=server.model,
        messages=[user(video_part(clip_url(320, 240, 12, fps=6)), "What moves?")],
        max_tokens=4,
        temperature=0,
        extra_body={"return_token_ids": True},
    )
    prompt_ids = completion.model_extra["prompt_token_ids"]
    assert prompt_ids.count(PAD) == expected_tokens(320, 240, 4) == 280  # 2 s at 2 fps
    assert completion.usage.prompt_tokens == len(prompt_ids)
    assert completion.choices[0].finish_reason in ("stop", "length")


@pytest.mark.e2e  # the token count the engine saw
@pytest.mark.parametrize(
    ("fmt", "width", "height", "frames", "fps", "sampled"),
    [
        ("mp4", 320, 240, 30, 15, 4),  # 2 s: 4 frames
        ("webm", 240, 320, 40, 10, 8),  # 4 s, portrait: 8 frames
        ("mov", 200, 150, 12, 6, 4),  # MPEG-4 part 2 in QuickTime
        ("gif", 160, 120, 10, 5, 4),  # animated GIF
    ],
)
def test_every_container_becomes_frames_at_two_per_second(
    client, fmt, width, height, frames, fps, sampled
):
    url = clip_url(width, height, frames, fps=fps, fmt=fmt)
    answer = ask(client, video_part(url), "Describe.")
    assert pads(answer) == expected_tokens(width, height, sampled)


@pytest.mark.e2e  # the token count the engine saw
def test_the_cine_loop_streams_with_usage(client):
    body = {
        "messages": [user(video_part(data_url(cine_loop(), "dicom")), "Describe the cine loop.")],
        "max_tokens": 4,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
    }
    events = sse_events(client, body)
    assert events[-1] == "[DONE]"
    assert not any("error" in event for event in events[:-1])
    prompt_ids = events[0]["prompt_token_ids"]
    # 30 frames at Frame Time 33.3 ms: 1 s, so qwen-vl-utils' minimum of 4 frames
    assert prompt_ids.count(PAD) == expected_tokens(320, 240, 4)
    assert events[-2]["usage"]["prompt_tokens"] == len(prompt_ids)


@pytest.mark.e2e  # the token count the engine saw
@pytest.mark.parametrize(
    ("options", "frames", "budget"),
    [
        ({}, 8, {}),
        ({"nframes": 4}, 4, {}),
        ({"nframes": 7}, 8, {}),  # rounded to an even count, as qwen-vl-utils does
        ({"fps": 4.0}, 16, {}),
        ({"fps": 0.5}, 4, {}),  # at least 4 frames
        ({"max_pixels": 112896}, 8, {"max_pixels": 112896}),
        ({"total_pixels": 401408}, 8, {"total_pixels": 401408}),
        ({"min_pixels": 200704, "nframes": 2}, 2, {"min_pixels": 200704}),
    ],
)
def test_per_request_sampling_options(client, options, frames, budget):
    url = clip_url(400, 300, 40, fps=10, seed=4)  # 4 s
    answer = ask(client, video_part(url, **options), "Describe.")
    assert pads(answer) == expected_tokens(400, 300, frames, **budget)


@pytest.mark.e2e  # the token count the engine saw
def test_a_video_and_images_in_one_conversation(client):
    from tests.utils.images import image_data_url, image_part, tokens_for

    answer = ask(
        client,
        image_part(image_data_url(224, 224)),
        video_part(clip_url(320, 240, 12, fps=6, fmt="webm")),
        "Compare.",
    )
    assert pads(answer) == 280
    assert answer["usage"]["prompt_tokens"] > 280 + tokens_for(224, 224)


def test_http_and_file_sources_follow_the_image_allow_lists(client, image_sources):
    data = clip(320, 240, 12, fps=6)
    for folder in (image_sources.web_root, image_sources.local_dir, image_sources.outside_dir):
        (folder / "clip.mp4").write_bytes(data)
    for url in (
        f"{image_sources.http_origin}/clip.mp4",
        f"file://{image_sources.local_dir / 'clip.mp4'}",
    ):
        assert pads(ask(client, video_part(url), "Describe.")) == 280
    response = client.post(
        CHAT,
        json={
            "messages": [user(video_part(f"file://{image_sources.outside_dir / 'clip.mp4'}"))],
            "max_tokens": 1,
        },
    )
    assert_openai_error(response, 400, "messages[0].content[0].video_url", "image_url_not_allowed")


def test_a_second_video_is_refused_by_default(client):
    url = clip_url(64, 64, 4, fps=2)
    response = client.post(
        CHAT, json={"messages": [user(video_part(url), video_part(url))], "max_tokens": 1}
    )
    assert_openai_error(response, 400, "messages", "too_many_videos")


def test_a_video_over_the_context_is_refused_before_decoding(client):
    # 58 s at 2 fps: 116 frames of 336x336 (the per-frame minimum), 58 x 144 = 8352 tokens
    url = clip_url(64, 64, 116, fps=2)
    response = client.post(CHAT, json={"messages": [user(video_part(url))], "max_tokens": 1})
    error = assert_openai_error(response, 400, "messages", "context_length_exceeded")
    assert "8352" in error["message"] and "video" in error["message"]
