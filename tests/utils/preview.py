"""`POST /v1/images/preview` as the tests call it, and its PNG data URLs as pixel arrays."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import numpy as np
from PIL import Image

PREVIEW = "/v1/images/preview"


def preview(client: httpx.Client, part: dict, **headers: str) -> dict:
    """The preview of one content part (asserts 200)."""
    response = client.post(PREVIEW, json=part, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def png_pixels(url: str) -> np.ndarray:
    """A `data:image/png;base64,...` URL's pixels, as the client decodes them (H x W x 3)."""
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix), url[:40]
    image = Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))
    assert image.format == "PNG" and image.mode == "RGB"
    return np.asarray(image)


def without_pixels(body: Any) -> Any:
    """The answer with every PNG left out: what remains is facts (and can be searched)."""
    if isinstance(body, dict):
        return {k: "<png>" if k == "image" else without_pixels(v) for k, v in body.items()}
    if isinstance(body, list):
        return [without_pixels(item) for item in body]
    return body
