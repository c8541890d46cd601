"""The inputs both parity tests use: each a pair (messages sent to the server, messages given
to the model card's recipe) in the model card's message shape, with images as data URLs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from tests.utils import videos
from tests.utils.images import data_url, encode, gradient_image

PROMPT = "Describe the findings."


def png(width: int, height: int, mode: str = "RGB", seed: int = 0) -> str:
    return data_url(encode(gradient_image(width, height, mode=mode, seed=seed), "PNG"))


def jpeg(width: int, height: int, seed: int = 0) -> str:
    image = gradient_image(width, height, seed=seed)
    return data_url(encode(image, "JPEG", quality=90), "image/jpeg")


def rgba_png(width: int, height: int) -> str:
    rgba = np.asarray(gradient_image(width, height, mode="RGBA")).copy()
    rgba[..., 3] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]  # fades out to the left
    return data_url(encode(Image.fromarray(rgba, "RGBA"), "PNG"))


def twelve_bit() -> np.ndarray:
    y, x = np.mgrid[0:480, 0:640]
    return ((x * 4095) // 639 * 0.7 + (y * 4095) // 479 * 0.3).astype(np.uint16)


def sixteen_bit_png() -> tuple[str, str]:
    """(what the client sends, what the reference is given: the same image stretched to 8 bit)."""
    values = twelve_bit()
    sent = data_url(encode(Image.fromarray(values), "PNG"))
    low, high = float(values.min()), float(values.max())
    stretched = np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)
    return sent, data_url(encode(Image.fromarray(stretched, "L"), "PNG"))


def one_image(
    url: str, reference_url: str | None = None, **budget: int
) -> tuple[list[dict], list[dict]]:
    def conversation(image: str) -> list[dict]:
        element = {"type": "image", "image": image, **budget}
        return [{"role": "user", "content": [element, {"type": "text", "text": PROMPT}]}]

    return conversation(url), conversation(reference_url or url)


def two_images() -> tuple[list[dict], list[dict]]:
    content = [
        {"type": "text", "text": "Compare the prior study"},
        {"type": "image", "image": png(640, 480, "L", seed=1)},
        {"type": "text", "text": "with the current one"},
        {"type": "image", "image": jpeg(800, 600, seed=2)},
    ]
    messages = [{"role": "user", "content": content}]
    return messages, messages


def image_in_an_earlier_turn() -> tuple[list[dict], list[dict]]:
    messages = [
        {"role": "system", "content": "You are a radiology assistant."},
        {
            "role": "user",
            "content": [
                {"type": "image", "image": png(300, 200, "L", seed=3)},
                {"type": "text", "text": "Is there an effusion?"},
            ],
        },
        {"role": "assistant", "content": "No effusion is seen."},
        {"role": "user", "content": [{"type": "text", "text": "And the heart size?"}]},
    ]
    return messages, messages


def one_video(url: str, **options) -> tuple[list[dict], list[dict]]:
    content = [{"type": "video", "video": url, **options}, {"type": "text", "text": PROMPT}]
    messages = [{"role": "user", "content": content}]
    return messages, messages


def video_and_image() -> tuple[list[dict], list[dict]]:
    content = [
        {"type": "text", "text": "The clip"},
        {"type": "video", "video": videos.clip_url(320, 240, 16, fps=8, fmt="mov", seed=5)},
        {"type": "text", "text": "and the still"},
        {"type": "image", "image": png(300, 200, "L", seed=6)},
    ]
    messages = [{"role": "user", "content": content}]
    return messages, messages


# Videos: short and long, landscape and portrait, each container, the cine loop, the options.
VIDEO_CASES: dict[str, Callable[[], tuple[list[dict], list[dict]]]] = {
    "video-short-landscape-mp4": lambda: one_video(videos.clip_url(320, 240, 12, fps=6)),
    "video-long-portrait-webm": lambda: one_video(
        videos.clip_url(180, 320, 200, fps=10, fmt="webm", seed=1)
    ),
    "video-animated-gif": lambda: one_video(videos.clip_url(160, 120, 10, fps=5, fmt="gif")),
    "video-dicom-cine": lambda: one_video(videos.data_url(videos.cine_loop(), "dicom")),
    "video-large-frames-nframes": lambda: one_video(
        videos.clip_url(640, 640, 20, fps=10, seed=2), nframes=6
    ),
    "video-fps-and-budget": lambda: one_video(
        videos.clip_url(400, 300, 40, fps=20, seed=3), fps=4.0, max_pixels=200704
    ),
    "video-and-image": video_and_image,
}


CASES: dict[str, Callable[[], tuple[list[dict], list[dict]]]] = {
    "tiny-20px-gray": lambda: one_image(png(20, 20, "L")),
    "512-rgb-png": lambda: one_image(png(512, 512)),
    "1024x768-gray-png": lambda: one_image(png(1024, 768, "L")),
    "1400x1100-gray-png": lambda: one_image(png(1400, 1100, "L")),
    # the image's own budget: above the size-form checkpoint's, below the demo's
    "1400x1100-max-pixels": lambda: one_image(png(1400, 1100, "L"), max_pixels=1280 * 28 * 28),
    "3000x600-jpeg": lambda: one_image(jpeg(3000, 600)),
    "wide-2800x20": lambda: one_image(png(2800, 20)),
    "tall-30x1500-gray": lambda: one_image(png(30, 1500, "L")),
    "rgba-png": lambda: one_image(rgba_png(300, 200)),
    "16-bit-png": lambda: one_image(*sixteen_bit_png()),
    "two-images": two_images,
    "image-in-earlier-turn": image_in_an_earlier_turn,
    **VIDEO_CASES,
}
