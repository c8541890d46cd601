"""Previews of `video_url` parts: the sampled frames' size, timing and token count, and up to
eight of those frames exactly as the model gets them (qwen-vl-utils' fetch_video), for clips
and DICOM cine loops. Through the session's real server."""

from __future__ import annotations

import numpy as np
import pytest
from qwen_vl_utils.vision_process import fetch_video

from tests.utils.chat import chat, user
from tests.utils.ct_series import as_cine, synthetic_ct_series
from tests.utils.errors import assert_openai_error
from tests.utils.preview import PREVIEW, png_pixels, preview
from tests.utils.reference import use_pyav_reader
from tests.utils.videos import (
    cine_loop,
    clip_url,
    data_url,
    expected_tokens,
    model_frame_size,
    video_pad_id,
    video_part,
)


def only_video(body: dict) -> dict:
    assert body["object"] == "preview" and body["type"] == "video_url" and body["images"] == []
    assert body["tokens"] == body["video"]["tokens"]
    return body["video"]


def test_a_clip_shows_eight_of_its_sampled_frames_as_fetch_video_makes_them(client):
    url = clip_url(320, 240, 100, fps=10)  # 10 s: 20 frames sampled at 2 per second
    video = only_video(preview(client, video_part(url)))

    use_pyav_reader()
    (frames, metadata), sample_fps = fetch_video(
        {"video": url}, return_video_sample_fps=True, return_video_metadata=True
    )
    reference = frames.permute(0, 2, 3, 1).numpy().astype(np.uint8)
    assert video["sampled_frames"] == len(reference) == 20
    assert video["frame_indices"] == metadata["frames_indices"].tolist()
    assert video["sample_fps"] == pytest.approx(sample_fps)
    assert (video["width"], video["height"]) == model_frame_size(320, 240, 20)
    assert video["tokens"] == expected_tokens(320, 240, 20)
    positions = [frame["position"] for frame in video["shown"]]
    assert len(positions) == 8 and positions[0] == 0 and positions[-1] == 19
    for frame in video["shown"]:
        assert np.array_equal(png_pixels(frame["image"]), reference[frame["position"]])
        assert frame["source_frame"] == video["frame_indices"][frame["position"]]
        assert frame["time_s"] == pytest.approx(frame["source_frame"] / 10)
    assert video["source"] == {
        "format": "MP4",
        "bytes": video["source"]["bytes"],
        "width": 320,
        "height": 240,
        "frames": 100,
        "fps": 10.0,
        "duration_s": 10.0,
    }
    assert video["dicom"] is None


def test_options_change_the_sampling(client):
    url = clip_url(640, 480, 60, fps=6)  # 10 s
    default = only_video(preview(client, video_part(url)))
    video = only_video(preview(client, video_part(url, fps=1.0, max_pixels=160 * 28 * 28)))
    assert (default["sampled_frames"], video["sampled_frames"]) == (20, 10)
    assert (video["width"], video["height"]) == model_frame_size(640, 480, 10, max_pixels=160 * 784)
    assert video["width"] * video["height"] < default["width"] * default["height"]
    assert video["tokens"] == expected_tokens(640, 480, 10, max_pixels=160 * 784)
    assert [frame["position"] for frame in video["shown"]] == [0, 1, 3, 4, 5, 6, 8, 9]


def test_token_count_is_what_chat_puts_in_the_prompt(client):
    part = video_part(clip_url(200, 150, 24, fps=6))
    tokens = preview(client, part)["tokens"]
    answer = chat(client, [user(part, "What moves?")], max_tokens=1, return_token_ids=True)
    assert answer["prompt_token_ids"].count(video_pad_id()) == tokens


def test_ultrasound_cine_loop_is_colour_without_a_window(client):
    video = only_video(preview(client, video_part(data_url(cine_loop(), "dcm"))))
    assert video["source"]["format"] == "DICOM" and video["source"]["frames"] == 30
    facts = video["dicom"]
    assert facts["modality"] == "US" and facts["window"] is None
    assert facts["frames"] == 30 and facts["frame"] == video["frame_indices"][0]


def test_ct_cine_takes_the_window_asked(client):
    series = synthetic_ct_series(8, name="preview-cine")
    cine = data_url(as_cine(series.slices, 500.0), "dcm")
    lung = only_video(preview(client, video_part(cine, dicom={"window": "lung"})))
    bone = only_video(preview(client, video_part(cine, dicom={"window": "bone"})))
    assert lung["dicom"]["window"]["source"] == "request_preset"
    assert lung["dicom"]["window"]["preset"] == "lung"
    assert bone["dicom"]["window"]["preset"] == "bone"
    assert not np.array_equal(
        png_pixels(lung["shown"][0]["image"]), png_pixels(bone["shown"][0]["image"])
    )


def test_a_broken_clip_gets_chats_400(client):
    broken = data_url(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    response = client.post(PREVIEW, json=video_part(broken))
    assert_openai_error(response, 400, param="video_url", code="invalid_video")
