"""Chat messages -> the model's own chat template text plus the images, in prompt order."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lingshu_server.dicom import DicomOptions
from lingshu_server.dicomweb import DicomWebSource
from lingshu_server.errors import InvalidRequestError
from lingshu_server.image_sources import ImageFetcher
from lingshu_server.media import (
    EncodedImage,
    ImageLimits,
    PreparedImage,
    data_url_decoded_size,
    decode_data_url,
    prepare_image,
)
from lingshu_server.protocol import ChatMessage, ImagePart, TextPart

# The template expands each image part to <|vision_start|><|image_pad|><|vision_end|>;
# vLLM then expands the single <|image_pad|> to one token per 28x28 pixels.
IMAGE_PART = {"type": "image"}


@dataclass
class ChatPrompt:
    text: str
    token_ids: list[int]  # the text's tokens, one <|image_pad|> per image
    images: list[PreparedImage]

    @property
    def image_tokens(self) -> int:
        return sum(image.num_tokens for image in self.images)

    @property
    def num_tokens(self) -> int:
        """Tokens the engine will see: each image's single pad expands to its visual tokens."""
        return len(self.token_ids) - len(self.images) + self.image_tokens


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


def _template_messages(
    messages: list[ChatMessage], images_per_part: Mapping[str, int]
) -> list[dict[str, Any]]:
    """`images_per_part` (by param): a DICOMweb series part stands for several images."""
    rendered = []
    for i, message in enumerate(messages):
        role = "system" if message.role == "developer" else message.role
        if message.content is None or isinstance(message.content, str):
            content: str | list[dict[str, Any]] = message.content or ""
        else:
            content = []
            for j, part in enumerate(message.content):
                if isinstance(part, TextPart):
                    content.append({"type": "text", "text": part.text})
                else:
                    content.extend([IMAGE_PART] * images_per_part.get(_image_param(i, j), 1))
        rendered.append({"role": role, "content": content})
    return rendered


def _image_param(message: int, part: int) -> str:
    return f"messages[{message}].content[{part}].image_url"


def image_parts(messages: list[ChatMessage]) -> list[tuple[str, ImagePart]]:
    """Every image part in prompt order, with the request param that names it."""
    found = []
    for i, message in enumerate(messages):
        if isinstance(message.content, list):
            for j, part in enumerate(message.content):
                if isinstance(part, ImagePart):
                    found.append((_image_param(i, j), part))
    return found


class ChatPromptBuilder:
    """Renders messages with the model's template; fetches and decodes images in a worker pool."""

    def __init__(
        self,
        render: Callable[[list[dict[str, Any]]], str],
        tokenize: Callable[[str], list[int]],
        pool: Executor,
        limits: ImageLimits,
        max_images: int,
        fetcher: ImageFetcher,
        dicomweb: DicomWebSource,
    ):
        self._render = render
        self._tokenize = tokenize
        self._pool = pool
        self._limits = limits
        self._max_images = max_images
        self._fetcher = fetcher
        self._dicomweb = dicomweb

    async def build(self, messages: list[ChatMessage]) -> ChatPrompt:
        parts = image_parts(messages)
        self._check_image_count(len(parts))
        # DICOMweb series -> one part per slice (metadata only), counted before any fetch
        parts = await self._dicomweb.expand_parts(parts, self._max_images)
        self._check_image_count(len(parts))
        inline = sum(
            data_url_decoded_size(part.image_url.url)
            for _, part in parts
            if part.image_url.url.startswith("data:")
        )
        self._check_request_bytes(inline)
        encoded = await asyncio.gather(*(self._fetch(part, param) for param, part in parts))
        self._check_request_bytes(sum(len(e.data) for e in encoded))
        loop = asyncio.get_running_loop()
        images = await asyncio.gather(
            *(
                loop.run_in_executor(self._pool, self._prepare, data, part, param)
                for data, (param, part) in zip(encoded, parts, strict=True)
            )
        )
        for image, (_, part) in zip(images, parts, strict=True):
            image.source = self._dicomweb.audit_record(part.image_url.url)
        text = self._render(_template_messages(messages, Counter(param for param, _ in parts)))
        return ChatPrompt(text=text, token_ids=self._tokenize(text), images=list(images))

    def _check_image_count(self, count: int) -> None:
        if count > self._max_images:
            raise InvalidRequestError(
                f"this request has {count} images (a DICOMweb series counts each slice); "
                f"the server accepts at most {self._max_images} per request",
                param="messages",
                code="too_many_images",
            )

    def _check_request_bytes(self, total: int) -> None:
        if total > self._limits.max_request_image_bytes:
            raise InvalidRequestError(
                f"the images in this request add up to more than the server accepts "
                f"({self._limits.max_request_image_bytes} bytes per request)",
                param="messages",
                code="image_too_large",
            )

    async def _fetch(self, part: ImagePart, param: str) -> EncodedImage:
        url = part.image_url.url
        if url.startswith("data:"):
            # base64 decoding of big images is CPU work: keep it off the event loop
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._pool, decode_data_url, url, param, self._limits.max_image_bytes
            )
        from_pacs = await self._dicomweb.fetch(url, param)
        if from_pacs is not None:
            return EncodedImage(data=from_pacs, declared_type="application/dicom")
        return EncodedImage(data=await self._fetcher.fetch(url, param), declared_type=None)

    def _prepare(self, encoded: EncodedImage, part: ImagePart, param: str) -> PreparedImage:
        spec = part.image_url
        budget = self._limits.budget(spec.detail, spec.min_pixels, spec.max_pixels)
        window = spec.dicom
        dicom = (
            DicomOptions(window.window, window.center, window.width, window.frame)
            if window is not None
            else DicomOptions()
        )
        return prepare_image(encoded, self._limits, budget, dicom, param)


def tokenizer_encoder(tokenizer: Any) -> Callable[[str], list[int]]:
    def encode(text: str) -> list[int]:
        # The template already wrote every special token the model needs.
        return tokenizer.encode(text, add_special_tokens=False)

    return encode


def template_renderer(tokenizer: Any, template: str) -> Callable[[list[dict[str, Any]]], str]:
    def render(messages: list[dict[str, Any]]) -> str:
        return tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=True
        )

    return render
