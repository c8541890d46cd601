"""Chat messages -> the model's own chat template text plus the images, in prompt order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lingshu_server.errors import InvalidRequestError
from lingshu_server.media import PixelBudget, PreparedImage, decode_data_url, prepare_image
from lingshu_server.protocol import ChatMessage, ImagePart, TextPart

# The template expands each image part to <|vision_start|><|image_pad|><|vision_end|>;
# vLLM then expands the single <|image_pad|> to one token per 28x28 pixels.
IMAGE_PART = {"type": "image"}


@dataclass
class ChatPrompt:
    text: str
    images: list[PreparedImage]

    @property
    def image_tokens(self) -> int:
        return sum(image.num_tokens for image in self.images)


def load_chat_template(model_dir: str, tokenizer: Any) -> str:
    """The checkpoint's chat template: chat_template.jinja or .json, else the tokenizer's."""
    directory = Path(model_dir)
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    as_json = directory / "chat_template.json"
    if as_json.is_file():
        template = json.loads(as_json.read_text()).get("chat_template")
        if template:
            return template
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise ValueError(f"{model_dir} has no chat template (chat_template.json or tokenizer)")
    return template


def _template_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    rendered = []
    for message in messages:
        role = "system" if message.role == "developer" else message.role
        if message.content is None or isinstance(message.content, str):
            content: str | list[dict[str, Any]] = message.content or ""
        else:
            content = [
                {"type": "text", "text": part.text} if isinstance(part, TextPart) else IMAGE_PART
                for part in message.content
            ]
        rendered.append({"role": role, "content": content})
    return rendered


def image_parts(messages: list[ChatMessage]) -> list[tuple[str, ImagePart]]:
    """Every image part in prompt order, with the request param that names it."""
    found = []
    for i, message in enumerate(messages):
        if isinstance(message.content, list):
            for j, part in enumerate(message.content):
                if isinstance(part, ImagePart):
                    found.append((f"messages[{i}].content[{j}].image_url", part))
    return found


class ChatPromptBuilder:
    """Renders messages with the model's template; decodes images in a worker pool."""

    def __init__(
        self,
        render: Callable[[list[dict[str, Any]]], str],
        pool: Executor,
        budget: PixelBudget,
        max_images: int,
    ):
        self._render = render
        self._pool = pool
        self._budget = budget
        self._max_images = max_images

    async def build(self, messages: list[ChatMessage]) -> ChatPrompt:
        parts = image_parts(messages)
        if len(parts) > self._max_images:
            raise InvalidRequestError(
                f"this request has {len(parts)} images; the server accepts at most "
                f"{self._max_images} per request",
                param="messages",
                code="too_many_images",
            )
        loop = asyncio.get_running_loop()
        images = await asyncio.gather(
            *(
                loop.run_in_executor(self._pool, _decode_image, part.image_url.url, self._budget, p)
                for p, part in parts
            )
        )
        text = self._render(_template_messages(messages))
        return ChatPrompt(text=text, images=list(images))


def _decode_image(url: str, budget: PixelBudget, param: str) -> PreparedImage:
    return prepare_image(decode_data_url(url, param), budget, param)


def template_renderer(tokenizer: Any, template: str) -> Callable[[list[dict[str, Any]]], str]:
    def render(messages: list[dict[str, Any]]) -> str:
        return tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=True
        )

    return render
