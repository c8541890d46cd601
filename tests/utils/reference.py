"""The model card's own recipe, as the reference the server must match.

transformers' `Qwen2_5_VLForConditionalGeneration` + `AutoProcessor` +
`qwen_vl_utils.process_vision_info`, greedy decoding in float32, exactly as the Qwen2.5-VL and
Lingshu model cards write it. Messages use the model card's shape
(`{"type": "image", "image": <data URL>}`), and the same data URL goes to the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from qwen_vl_utils import process_vision_info
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration


@dataclass
class ReferenceRun:
    input_ids: list[int]  # the prompt as the model sees it (image pads expanded)
    generated: list[int]  # greedy tokens
    pixel_values: torch.Tensor | None


class ModelCardReference:
    def __init__(self, model_dir: Path):
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            str(model_dir), dtype=torch.float32
        ).eval()
        self.processor = AutoProcessor.from_pretrained(str(model_dir))

    def inputs(self, messages: list[dict]) -> dict:
        text = self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        images, videos = process_vision_info(messages)
        return self.processor(
            text=[text], images=images, videos=videos, padding=True, return_tensors="pt"
        )

    def run(self, messages: list[dict], max_new_tokens: int) -> ReferenceRun:
        inputs = self.inputs(messages)
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        prompt_length = inputs["input_ids"].shape[1]
        return ReferenceRun(
            input_ids=inputs["input_ids"][0].tolist(),
            generated=output[0, prompt_length:].tolist(),
            pixel_values=inputs.get("pixel_values"),
        )


def to_openai(messages: list[dict]) -> list[dict]:
    """The same conversation as an OpenAI chat request's messages."""
    converted = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [
                {"type": "image_url", "image_url": {"url": part["image"]}}
                if part["type"] == "image"
                else part
                for part in content
            ]
        converted.append({"role": message["role"], "content": content})
    return converted
