"""Hostile and broken videos get a 400 in OpenAI's shape, found from the header or the packets
wherever possible (nothing decoded); the server's caps hold; decoding stops at its deadline."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from lingshu_server.core.errors import InvalidRequestError
from lingshu_server.inputs.video import (
    SamplingOptions,
    VideoLimits,
    decode_container,
    plan_video,
    probe_container,
)
from tests.utils.chat import CHAT, chat, user
from tests.utils.errors import assert_openai_error
from tests.utils.videos import clip, clip_url, data_url, expected_tokens, video_part
from tests.video.conftest import MAX_BYTES, MAX_FRAMES, MAX_SECONDS

PARAM = "messages[0].content[0].video_url"


def refused(client, url: str, code: str, param: str = PARAM, **options) -> dict:
    response = client.post(
        CHAT, json={"messages": [user(video_part(url, **options))], "max_tokens": 1}
    )
    return assert_openai_error(response, 400, param, code)


def empty_mp4() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height = 64, 64
        container.start_encoding()  # the header, and not one frame
    return buffer.getvalue()


def gif_declaring(width: int, height: int) -> bytes:
    """A small GIF whose logical screen and frames claim `width` x `height` pixels."""
    data = bytearray(clip(32, 32, 4, fps=5, fmt="gif"))
    data[6:10] = width.to_bytes(2, "little") + height.to_bytes(2, "little")
    return bytes(data)


def ffv1_mkv() -> bytes:
    """A Matroska file holding FFV1 frames: a codec the server does not decode."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as container:
        stream = container.add_stream("ffv1", rate=5)
        stream.width, stream.height = 32, 32
        for _ in range(4):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (clip(160, 120, 20, fps=10)[:3000], "invalid_video"),  # truncated (index at the end)
        (b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8, "invalid_video"),  # garbage
        (b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n", "invalid_video"),  # a playlist
        (empty_mp4(), "invalid_video"),  # zero frames
        (clip(64, 64, 1, fps=2), "invalid_video"),  # one frame: no temporal patch
        (clip(64, 64, 20, fps=5000), "invalid_video"),  # an absurd frame rate
        (ffv1_mkv(), "invalid_video"),  # a codec outside the list
        (gif_declaring(65535, 65535), "invalid_video"),  # a 4-gigapixel screen
    ],
    ids=[
        "truncated",
        "garbage",
        "playlist",
        "zero-frames",
        "one-frame",
        "5000-fps",
        "ffv1",
        "gif-bomb",
    ],
)
def test_broken_and_hostile_videos_get_a_400(client, data, code):
    refused(client, data_url(data), code)


def test_a_video_over_the_byte_cap_is_refused_before_decoding(tight_client):
    noise = np.random.default_rng(0).integers(0, 256, (20, 240, 320, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10, options={"crf": "0"})
        stream.width, stream.height = 320, 240
        for pixels in noise:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    assert len(buffer.getvalue()) > MAX_BYTES
    error = refused(tight_client, data_url(buffer.getvalue()), "video_too_large")
    assert str(MAX_BYTES) in error["message"]


def test_frames_over_the_pixel_cap_are_refused_from_the_header(tight_client):
    error = refused(tight_client, clip_url(640, 480, 4, fps=2), "video_too_large")
    assert "640x480" in error["message"]


def test_a_video_over_the_duration_cap_is_refused(tight_client):
    url = clip_url(64, 64, 2 * (MAX_SECONDS + 5), fps=2)
    error = refused(tight_client, url, "video_too_large")
    assert f"{MAX_SECONDS} s" in error["message"]


def test_frames_are_clamped_to_the_server_cap(tight_client):
    url = clip_url(320, 240, 100, fps=10)  # 10 s: 20 frames at 2 fps
    for options in ({}, {"nframes": 40}, {"fps": 8.0}):
        answer = chat(
            tight_client,
            [user(video_part(url, **options))],
            max_tokens=1,
            return_token_ids=True,
        )
        expected = expected_tokens(320, 240, MAX_FRAMES)
        assert answer["usage"]["prompt_tokens"] > expected
        assert answer["usage"]["prompt_tokens"] < expected + 40


def test_more_videos_than_allowed(tight_client):
    url = clip_url(64, 64, 4, fps=2)
    parts = [video_part(url) for _ in range(3)]
    response = tight_client.post(CHAT, json={"messages": [user(*parts)], "max_tokens": 1})
    assert_openai_error(response, 400, "messages", "too_many_videos")


def test_nframes_beyond_the_video_is_a_400(client):
    url = clip_url(64, 64, 6, fps=2)
    error = refused(client, url, "invalid_video_options", f"{PARAM}.nframes", nframes=10)
    assert "6 frames" in error["message"]


@pytest.mark.parametrize(
    "options", [{"fps": 2, "nframes": 4}, {"fps": 0}, {"nframes": 1}, {"dicom": {"frame": 2}}]
)
def test_contradictory_options_are_a_400(client, options):
    response = client.post(
        CHAT,
        json={"messages": [user(video_part(clip_url(64, 64, 4), **options))], "max_tokens": 1},
    )
    assert_openai_error(response, 400)


def test_decoding_stops_at_its_deadline():
    data = clip(640, 480, 120, fps=30)
    limits = VideoLimits(
        max_bytes=1 << 26,
        max_frames=256,
        max_seconds=60,
        max_frame_pixels=10**8,
        decode_timeout=0.01,
        default_ct_window="mediastinum",
    )
    plan = plan_video(probe_container(data, limits, "p"), SamplingOptions(), limits, "p")
    with pytest.raises(InvalidRequestError) as refusal:
        decode_container(data, plan, limits, "p")
    assert refusal.value.code == "video_too_large" and "0.01 s" in refusal.value.message
