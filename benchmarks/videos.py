"""Synthetic benchmark clips: H.264 MP4s with a moving radiograph-like scene, a different clip
for every request (vLLM caches processed inputs by content, so a repeated clip would measure
cache hits)."""

from __future__ import annotations

import io

import av
import numpy as np

from benchmarks.images import base_image


def encode_clip(width: int, height: int, seconds: int, fps: int, seed: int, index: int) -> bytes:
    """`seconds` of H.264 at `fps`: the base image panning sideways, with a band of noise
    seeded from `index` so that no two requests send the same clip."""
    scene = base_image(width, height, seed)
    band = np.random.default_rng([seed, index]).integers(0, 256, (8, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(seconds * fps):
            frame = np.roll(scene, 4 * k, axis=1)
            frame[-8:] = band
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()
