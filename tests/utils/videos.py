"""Test clips made locally with PyAV (its wheels encode H.264, VP9, MPEG-4 and GIF), as bytes,
data URLs and `video_url` parts, and the cine loop from pydicom's test files."""

from __future__ import annotations

import base64
import functools
import io
from pathlib import Path

import av
import numpy as np
from pydicom.data import get_testdata_file
from qwen_vl_utils import vision_process as qwen

# container, codec, pixel format, MIME type
FORMATS = {
    "mp4": ("mp4", "libx264", "yuv420p", "video/mp4"),
    "webm": ("webm", "libvpx-vp9", "yuv420p", "video/webm"),
    "mov": ("mov", "mpeg4", "yuv420p", "video/quicktime"),
    "gif": ("gif", "gif", "rgb8", "image/gif"),
}
# 30 frames of ultrasound (YBR_FULL_422, JPEG baseline), Frame Time 33.333 ms: a 1 s cine loop
CINE_LOOP = "examples_ybr_color.dcm"


def frame_pixels(width: int, height: int, index: int, seed: int = 0) -> np.ndarray:
    """A moving pattern with structure, different in every frame (and for every seed)."""
    y, x = np.mgrid[0:height, 0:width]
    shift = index * 7 + seed * 31
    red = (x * 255 // max(1, width - 1) + shift) % 256
    green = (y * 255 // max(1, height - 1) + 2 * shift) % 256
    blue = ((x + y) // 4 + seed * 17 + index * 11) % 256
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


@functools.cache  # the same clip for collection and for the test (a few seconds each, the longest)
def clip(
    width: int, height: int, frames: int, fps: int = 10, fmt: str = "mp4", seed: int = 0
) -> bytes:
    container_format, codec, pixel_format, _ = FORMATS[fmt]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(
                frame_pixels(width, height, index, seed), format="rgb24"
            )
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buffer.getvalue()


def data_url(data: bytes, fmt: str = "mp4") -> str:
    mime = FORMATS[fmt][3] if fmt in FORMATS else "application/dicom"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def clip_url(width: int, height: int, frames: int, fps: int = 10, fmt: str = "mp4", seed: int = 0):
    return data_url(clip(width, height, frames, fps, fmt, seed), fmt)


def cine_loop() -> bytes:
    return Path(get_testdata_file(CINE_LOOP)).read_bytes()


def video_part(url: str, **options) -> dict:
    return {"type": "video_url", "video_url": {"url": url, **options}}


def video_tokens(frames: int, width: int, height: int) -> int:
    """Tokens of `frames` frames of `width` x `height` (already at a multiple of 28)."""
    return (frames + frames % 2) // 2 * (width // 28) * (height // 28)


def model_frame_size(width: int, height: int, frames: int, **budget: int) -> tuple[int, int]:
    """qwen-vl-utils' fetch_video resize for `frames` sampled frames (its default budget)."""
    unit = 28 * 28
    min_pixels = budget.get("min_pixels", qwen.VIDEO_MIN_TOKEN_NUM * unit)
    total = budget.get("total_pixels", qwen.MODEL_SEQ_LEN * unit * 0.9)
    max_pixels = max(min(qwen.VIDEO_MAX_TOKEN_NUM * unit, total / frames * 2), min_pixels * 1.05)
    max_pixels = min(budget.get("max_pixels", max_pixels), max_pixels)
    h, w = qwen.smart_resize(height, width, 28, min_pixels=min_pixels, max_pixels=max_pixels)
    return w, h


def expected_tokens(width: int, height: int, frames: int, **budget: int) -> int:
    return video_tokens(frames, *model_frame_size(width, height, frames, **budget))


def video_pad_id() -> int:
    from tokenizers import Tokenizer

    from lingshu_server.demo_model import ensure_demo_model

    tokenizer = Tokenizer.from_file(str(ensure_demo_model() / "tokenizer.json"))
    return tokenizer.token_to_id("<|video_pad|>")
