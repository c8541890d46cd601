"""How large an image is when the model sees it: the model card's recipe, as one rule.

The model card prepares each image with qwen-vl-utils' `fetch_image` (smart_resize within the
message's `min_pixels`/`max_pixels`, by default 4 to 16384 visual tokens), and the checkpoint's
image processor then applies its own limits (`preprocessor_config.json`, or the server's tighter
`--min-pixels`/`--max-pixels`). The server puts its budget on the message, the model card's
second way of setting one (`within`): fetch_image then resizes the image once, straight to a
size within the processor's limits, and the processor keeps it as it is. The server computes
where both steps lead from the image's header, so the token count is known, and checked against
the context, before any pixel is decoded; where smart_resize's rounding still lands outside the
processor's limits (extreme aspect ratios), the engine's processor resizes again, as the model
card's does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Qwen2.5-VL: 14 px patches merged 2x2, so one visual token per 28x28 pixels.
IMAGE_FACTOR = 28
# qwen-vl-utils' defaults for a message that names no budget (4 and 16384 tokens).
QWEN_MIN_PIXELS = 4 * IMAGE_FACTOR * IMAGE_FACTOR
QWEN_MAX_PIXELS = 16384 * IMAGE_FACTOR * IMAGE_FACTOR


@dataclass(frozen=True)
class PixelBudget:
    min_pixels: int
    max_pixels: int

    @property
    def tokens(self) -> tuple[int, int]:
        unit = IMAGE_FACTOR * IMAGE_FACTOR
        return self.min_pixels // unit, self.max_pixels // unit


RECIPE_DEFAULT = PixelBudget(QWEN_MIN_PIXELS, QWEN_MAX_PIXELS)


def within(message: PixelBudget, processor: PixelBudget) -> PixelBudget:
    """A message's budget inside the processor's: what the message may ask is bounded by the
    server's limits, as the processor would bound the image after it."""
    upper = min(message.max_pixels, processor.max_pixels)
    lower = min(max(message.min_pixels, processor.min_pixels), upper)
    return PixelBudget(lower, upper)


def resized(width: int, height: int, budget: PixelBudget) -> tuple[int, int]:
    """(width, height) after qwen-vl-utils' smart_resize within `budget`."""
    # imported here: qwen-vl-utils brings torch, which `lingshu-server --help` does not need
    from qwen_vl_utils.vision_process import smart_resize

    new_height, new_width = smart_resize(
        height, width, IMAGE_FACTOR, min_pixels=budget.min_pixels, max_pixels=budget.max_pixels
    )
    return new_width, new_height


@dataclass(frozen=True)
class ImageSize:
    """Where one image ends up: after the recipe's resize, then after the processor's."""

    recipe: tuple[int, int]  # what qwen-vl-utils' fetch_image makes of it
    final: tuple[int, int]  # what the checkpoint's processor then makes of that

    @property
    def resized_twice(self) -> bool:
        """The processor resizes this image again (only where smart_resize's rounding lands
        outside its limits: the message budget is within them)."""
        return self.recipe != self.final

    @property
    def tokens(self) -> int:
        width, height = self.final
        return (width // IMAGE_FACTOR) * (height // IMAGE_FACTOR)


def model_size(width: int, height: int, request: PixelBudget, processor: PixelBudget) -> ImageSize:
    """The size the model sees a `width` x `height` image at (aspect ratio checked first)."""
    from qwen_vl_utils.vision_process import MAX_RATIO

    if max(width, height) / max(1, min(width, height)) > MAX_RATIO:
        raise ValueError(f"aspect ratio beyond {MAX_RATIO}:1")
    recipe = resized(width, height, request)
    return ImageSize(recipe=recipe, final=resized(*recipe, processor))


@dataclass(frozen=True)
class CheckpointBudget:
    budget: PixelBudget
    source: str  # which keys of which file it came from, for the start-up log


def checkpoint_budget(model: str) -> CheckpointBudget:
    """The image limits the installed transformers applies for this checkpoint.

    Read through transformers itself, so both forms (`min_pixels`/`max_pixels`, and current
    transformers' `size.shortest_edge`/`size.longest_edge`) and its defaults resolve exactly as
    the engine's processor resolves them.
    """
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(model)
    size = processor.size
    lower, upper = _edge(size, "shortest_edge"), _edge(size, "longest_edge")
    if lower is None or upper is None:
        raise ValueError(f"{model}: the image processor has no pixel limits (size={size})")
    return CheckpointBudget(PixelBudget(int(lower), int(upper)), _source(model))


def _edge(size: Any, name: str) -> Any:
    return size.get(name) if isinstance(size, dict) else getattr(size, name, None)


def _source(model: str) -> str:
    config_file = Path(model) / "preprocessor_config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return "preprocessor_config.json (via transformers)"
    if "max_pixels" in config or "min_pixels" in config:
        return "preprocessor_config.json min_pixels/max_pixels"
    if isinstance(config.get("size"), dict):
        return "preprocessor_config.json size.shortest_edge/longest_edge"
    return "transformers' defaults for Qwen2VLImageProcessor"


def server_budget(
    min_pixels: int | None, max_pixels: int | None, checkpoint: CheckpointBudget
) -> tuple[PixelBudget, str]:
    """The processor budget in force: the checkpoint's, or tighter where the operator asked."""
    ckpt = checkpoint.budget
    if max_pixels is not None and max_pixels > ckpt.max_pixels:
        raise ValueError(
            f"--max-pixels {max_pixels} is above this checkpoint's limit of {ckpt.max_pixels} "
            f"pixels ({checkpoint.source}); the model's processor would shrink such images anyway"
        )
    upper = ckpt.max_pixels if max_pixels is None else max_pixels
    lower = ckpt.min_pixels if min_pixels is None else min_pixels
    if lower > upper:
        raise ValueError(f"--min-pixels {lower} is above the maximum of {upper} pixels")
    source = checkpoint.source
    if min_pixels is not None or max_pixels is not None:
        source = f"--min-pixels/--max-pixels within {checkpoint.source}"
    return PixelBudget(lower, upper), source
