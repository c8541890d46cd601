"""Test images made locally, as bytes and base64 data URLs."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
from PIL import Image
from qwen_vl_utils.vision_process import smart_resize

from lingshu_server.core.image_budget import QWEN_MAX_PIXELS, QWEN_MIN_PIXELS


def gradient_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A deterministic image with structure (so encoders cannot shrink it to nothing)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = ((x * 255) // max(1, width - 1) + (y * 127) // max(1, height - 1)) % 256
    noise = rng.integers(0, 32, size=(height, width))
    gray = ((base + noise) % 256).astype(np.uint8)
    if mode == "L":
        return Image.fromarray(gray, "L")
    rgb = np.stack([gray, np.flipud(gray), np.fliplr(gray)], axis=-1)
    return Image.fromarray(rgb, "RGB").convert(mode)


def encode(image: Image.Image, fmt: str = "PNG", **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_data_url(width: int, height: int, fmt: str = "PNG", seed: int = 0) -> str:
    mime = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}[fmt]
    return data_url(encode(gradient_image(width, height, seed=seed), fmt), mime)


def image_part(url: str, **extra) -> dict:
    return {"type": "image_url", "image_url": {"url": url, **extra}}


def tokens_for(width: int, height: int, max_pixels: int = QWEN_MAX_PIXELS) -> int:
    """Image tokens the model sees for an image of this size (qwen-vl-utils' resize rule)."""
    h, w = smart_resize(height, width, 28, min_pixels=QWEN_MIN_PIXELS, max_pixels=max_pixels)
    return (h // 28) * (w // 28)


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge grayscale image."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
