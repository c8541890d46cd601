"""DICOM in motion from a real PACS: a cine loop's instance URL and a CT series' URL sent as
video_url. A series becomes a video of its slices in anatomical order (InstanceNumbers here
run against the anatomy), sampled like frames and clamped to the server's frame cap."""

from __future__ import annotations

import pytest
import torch

from tests.utils.chat import chat, user
from tests.utils.ct_series import as_cine
from tests.utils.videos import data_url, expected_tokens, video_pad_id, video_part
from tests.video.conftest import MAX_FRAMES

PAD = video_pad_id()


def greedy(client, part: dict) -> dict:
    answer = chat(
        client,
        [user(part, "Describe the scan.")],
        max_tokens=6,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        return_token_ids=True,
    )
    assert answer["usage"]["prompt_tokens"] == len(answer["prompt_token_ids"])
    return answer


def test_a_cine_loop_from_the_pacs_is_a_video(tight_client, video_pacs):
    answer = greedy(tight_client, video_part(video_pacs.cine_url))
    assert answer["prompt_token_ids"].count(PAD) == expected_tokens(320, 240, 4)


@pytest.mark.e2e  # greedy log-probabilities: what the engine saw
def test_a_series_is_a_video_of_its_slices_in_anatomical_order(tight_client, video_pacs):
    slices = video_pacs.ct.slices  # anatomical order
    chosen = torch.linspace(0, len(slices) - 1, MAX_FRAMES).round().long().tolist()
    # 24 slices at the nominal 2 per second, 8 of them kept: 2/3 of a frame per second
    frame_time_ms = 1000 / (MAX_FRAMES / len(slices) * 2)
    in_order = as_cine([slices[i] for i in chosen], frame_time_ms)
    reversed_order = as_cine([slices[i] for i in reversed(chosen)], frame_time_ms)

    series = greedy(tight_client, video_part(video_pacs.ct_url))
    same = greedy(tight_client, video_part(data_url(in_order, "dicom")))
    mirrored = greedy(tight_client, video_part(data_url(reversed_order, "dicom")))

    assert series["prompt_token_ids"].count(PAD) == expected_tokens(64, 64, MAX_FRAMES)
    assert series["prompt_token_ids"] == same["prompt_token_ids"]
    assert series["choices"][0]["logprobs"] == same["choices"][0]["logprobs"]
    assert series["choices"][0]["logprobs"] != mirrored["choices"][0]["logprobs"]


@pytest.mark.e2e  # greedy log-probabilities: what the engine saw
def test_a_series_video_takes_a_window_and_fewer_frames(tight_client, video_pacs):
    part = video_part(video_pacs.ct_url, nframes=4, dicom={"window": "lung"})
    answer = greedy(tight_client, part)
    assert answer["prompt_token_ids"].count(PAD) == expected_tokens(64, 64, 4)
    default = greedy(tight_client, video_part(video_pacs.ct_url, nframes=4))
    assert answer["choices"][0]["logprobs"] != default["choices"][0]["logprobs"]
