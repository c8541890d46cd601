"""Synthetic benchmark images: structured content (so codecs work as on real images), a fixed
seed, and a cheap unique variant per request.

Every request must carry a different image: vLLM caches processed multimodal inputs and prefix
KV blocks by image content, so repeating one image would measure cache hits, not image handling.
A variant differs from the case's base image in its last rows only, which keeps building
hundreds of 2048x2048 payloads fast: JPEGs are re-encoded (tens of ms), and PNGs resume a copy of
a zlib stream that has already compressed the shared rows.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
from PIL import Image

FORMATS = ("jpeg", "png")
MIME_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}
JPEG_QUALITY = 90
PNG_COMPRESS_LEVEL = 6  # zlib's default, as PIL and most tools write
VARIANT_ROWS = 8  # rows at the bottom that make each variant unique


@functools.lru_cache(maxsize=4)
def base_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An RGB uint8 array shaped like a radiograph: soft gradients, bright rounded structures,
    rib-like bands, fine noise and a colour cast. Read-only; copy before changing it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(1, width - 1), y / max(1, height - 1)
    gray = 40 + 60 * u + 30 * v
    for _ in range(5):
        cx, cy = rng.uniform(0.2, 0.8, size=2)
        rx, ry = rng.uniform(0.08, 0.3, size=2)
        level = rng.uniform(40, 110)
        dist = ((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2
        gray += level / (1 + np.exp(6 * (dist - 1)))  # a blob with a soft edge
    frequency = rng.uniform(8, 14)
    gray += 18 * np.sin(2 * np.pi * (frequency * v + 1.5 * (u - 0.5) ** 2))
    gray += rng.normal(0, 3, size=(height, width)).astype(np.float32)
    rgb = np.stack([gray, 0.92 * gray + 12 * u + 8, 0.85 * gray + 20 * v + 18], axis=-1)
    array = np.clip(rgb, 0, 255).astype(np.uint8)
    array.flags.writeable = False
    return array


def variant_image(width: int, height: int, seed: int, index: int) -> np.ndarray:
    """The base image with its last rows overwritten by noise seeded from `index`."""
    array = base_image(width, height, seed).copy()
    rows = min(VARIANT_ROWS, height)
    rng = np.random.default_rng([seed, index])
    array[-rows:] = rng.integers(0, 256, size=(rows, width, 3), dtype=np.uint8)
    return array


def encode_variant(width: int, height: int, fmt: str, seed: int, index: int) -> bytes:
    """Encoded bytes of variant `index` of the (width, height, seed) base image."""
    if fmt == "jpeg":
        buffer = io.BytesIO()
        image = Image.fromarray(variant_image(width, height, seed, index), "RGB")
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue()
    if fmt == "png":
        return _png_variant(width, height, seed, index)
    raise ValueError(f"unknown image format {fmt!r}; expected one of {FORMATS}")


def _paeth_filter(rows: np.ndarray, previous: np.ndarray | None) -> bytes:
    """PNG filter type 4 (Paeth) on RGB rows, each prefixed with its filter byte."""
    raw = rows.reshape(rows.shape[0], -1).astype(np.int16)
    up = np.zeros_like(raw)
    up[1:] = raw[:-1]
    if previous is not None:
        up[0] = previous.reshape(-1)
    left = np.zeros_like(raw)
    left[:, 3:] = raw[:, :-3]
    up_left = np.zeros_like(raw)
    up_left[:, 3:] = up[:, :-3]
    estimate = left + up - up_left
    dist_left, dist_up = np.abs(estimate - left), np.abs(estimate - up)
    dist_up_left = np.abs(estimate - up_left)
    predictor = np.where(
        (dist_left <= dist_up) & (dist_left <= dist_up_left),
        left,
        np.where(dist_up <= dist_up_left, up, up_left),
    )
    filtered = ((raw - predictor) % 256).astype(np.uint8)
    framed = np.empty((raw.shape[0], raw.shape[1] + 1), dtype=np.uint8)
    framed[:, 0] = 4
    framed[:, 1:] = filtered
    return framed.tobytes()


@functools.lru_cache(maxsize=2)
def _png_prefix(width: int, height: int, seed: int) -> tuple[bytes, zlib._Compress]:
    """The zlib output for the shared rows, and the compressor positioned after them."""
    base = base_image(width, height, seed)
    shared = height - min(VARIANT_ROWS, height)
    compressor = zlib.compressobj(PNG_COMPRESS_LEVEL)
    prefix = compressor.compress(_paeth_filter(base[:shared], None)) if shared else b""
    return prefix, compressor


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _png_variant(width: int, height: int, seed: int, index: int) -> bytes:
    prefix, compressor = _png_prefix(width, height, seed)
    array = variant_image(width, height, seed, index)
    shared = height - min(VARIANT_ROWS, height)
    previous = array[shared - 1] if shared else None
    stream = compressor.copy()
    body = prefix + stream.compress(_paeth_filter(array[shared:], previous)) + stream.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )
