"""The engine's second resize, made visible: the image processor's own resize step.

The server hands the engine qwen-vl-utils' image, resized within the message budget
(`ImageLimits.budget`, inside the processor's limits), which the processor keeps as it is.
Where smart_resize's rounding still lands outside the processor's budget
(`PreparedImage.resized_twice`: extreme aspect ratios), the engine's image processor,
transformers' class for the checkpoint as the model card loads it, resizes it once more before
rescaling and normalising. To show the pixels the vision encoder really gets, this runs that
very step: the processor's own `process_image` (PIL -> uint8 tensor) and `resize` methods, with
the budget the engine gives it (`mm_processor_kwargs.size`), on the same image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from lingshu_server.core.image_budget import PixelBudget


class ProcessorResize:
    def __init__(self, model: str, budget: PixelBudget):
        from transformers import AutoImageProcessor
        from transformers.image_utils import SizeDict

        self._processor: Any = AutoImageProcessor.from_pretrained(model)
        self._size = SizeDict(shortest_edge=budget.min_pixels, longest_edge=budget.max_pixels)
        self._factor = self._processor.patch_size * self._processor.merge_size

    def __call__(self, image: Image.Image) -> Image.Image:
        """`image` (RGB, as handed to the engine) after the processor's resize, as uint8 RGB."""
        processor = self._processor
        tensor = processor.process_image(image, do_convert_rgb=True)  # C x H x W, uint8
        resized = processor.resize(
            tensor.unsqueeze(0), size=self._size, resample=processor.resample, factor=self._factor
        )
        pixels = resized[0].permute(1, 2, 0).numpy()
        if pixels.dtype != np.uint8:  # transformers resizes uint8 as uint8; keep it exact if not
            pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(pixels), "RGB")
