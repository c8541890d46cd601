"""Chat messages -> the model's own chat template text plus the images and videos, in prompt
order."""

from __future__ import annotations

import asyncio
import copy
import ctypes
import itertools
import json
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lingshu_server.core.errors import ContextLengthExceededError, InvalidRequestError
from lingshu_server.core.image_budget import PixelBudget
from lingshu_server.inputs.dicom import DicomOptions
from lingshu_server.inputs.dicomweb import DicomWebSource
from lingshu_server.inputs.image_cache import PreparedImageCache
from lingshu_server.inputs.image_sources import ImageFetcher
from lingshu_server.inputs.media import (
    EncodedImage,
    ImageLimits,
    PreparedImage,
    ProbedImage,
    data_url_decoded_size,
    decode_image,
    probe_data_url,
    probe_image,
)
from lingshu_server.inputs.video import PreparedVideo
from lingshu_server.inputs.video_inputs import VideoInputs, VideoParts, video_parts
from lingshu_server.protocol.common import (
    ChatMessage,
    ImagePart,
    InputModality,
    TextPart,
    VideoPart,
)
from lingshu_server.services.tool_template import QWEN_VL_TOOL_TEMPLATE, handles_tools, uses_tools

# The template expands each image part to <|vision_start|><|image_pad|><|vision_end|>;
# vLLM then expands the single <|image_pad|> to one token per 28x28 pixels.
IMAGE_PART = {"type": "image"}
VIDEO_PART = {"type": "video"}  # <|vision_start|><|video_pad|><|vision_end|>
T = TypeVar("T")
ImageParts = list[tuple[str, ImagePart]]  # (request param, part), in prompt order


@dataclass
class ChatPrompt:
    text: str
    token_ids: list[int]  # the text's tokens, one pad per image and per video
    images: list[PreparedImage]
    videos: list[PreparedVideo] = field(default_factory=list)

    @property
    def image_tokens(self) -> int:
        return sum(image.num_tokens for image in self.images)

    @property
    def video_tokens(self) -> int:
        return sum(video.num_tokens for video in self.videos)

    @property
    def num_tokens(self) -> int:
        """Tokens the engine will see: each single pad expands to its visual tokens."""
        pads = len(self.images) + len(self.videos)
        return len(self.token_ids) - pads + self.image_tokens + self.video_tokens


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
                elif isinstance(part, VideoPart):
                    content.append(VIDEO_PART)
                else:
                    content.extend([IMAGE_PART] * images_per_part.get(_image_param(i, j), 1))
        rendered.append({"role": role, "content": content, **_tool_fields(message)})
    return rendered


def _tool_fields(message: ChatMessage) -> dict[str, Any]:
    """Tool turns as chat templates take them (Hugging Face's convention, as vLLM passes them):
    a call's arguments as an object, which the template writes back as JSON."""
    if message.role == "tool":
        return {"tool_call_id": message.tool_call_id}
    if not message.tool_calls:
        return {}
    calls = [
        {
            "id": call.id,
            "type": "function",
            "function": {
                "name": call.function.name,
                "arguments": json.loads(call.function.arguments.strip() or "{}"),
            },
        }
        for call in message.tool_calls
    ]
    return {"tool_calls": calls}


def _image_param(message: int, part: int) -> str:
    return f"messages[{message}].content[{part}].image_url"


def image_parts(messages: list[ChatMessage]) -> ImageParts:
    """Every image part in prompt order, with the request param that names it."""
    found = []
    for i, message in enumerate(messages):
        if isinstance(message.content, list):
            for j, part in enumerate(message.content):
                if isinstance(part, ImagePart):
                    found.append((_image_param(i, j), part))
    return found


def text_length(messages: list[ChatMessage]) -> int:
    """Characters of text in the messages (the template adds a few dozen more)."""
    total = 0
    for message in messages:
        if isinstance(message.content, str):
            total += len(message.content)
        elif message.content is not None:
            total += sum(len(part.text) for part in message.content if isinstance(part, TextPart))
    return total


def message_texts(messages: list[ChatMessage]) -> Iterator[str]:
    for message in messages:
        if isinstance(message.content, str):
            yield message.content
        elif message.content is not None:
            yield from (part.text for part in message.content if isinstance(part, TextPart))


# A long text is counted in pieces of this many characters, so that counting stops as soon as
# the context is known to overflow, whatever the size of the text.
COUNT_CHUNK_CHARS = 64 * 1024
# malloc keeps freed memory for reuse; after tokenizing this much text, hand it back.
TRIM_AFTER_CHARS = 1024 * 1024


def tokens_at_least(texts: Iterable[str], tokenize: Callable[[str], list[int]], limit: int) -> int:
    """A lower bound on the tokens of `texts`, counted piece by piece up to `limit` (and a
    little past it). Cutting a text can only add a token at each cut, never remove one, so
    the count minus one per cut is a lower bound."""
    counted = cuts = 0
    for text in texts:
        for start in range(0, len(text), COUNT_CHUNK_CHARS):
            counted += len(tokenize(text[start : start + COUNT_CHUNK_CHARS]))
            cuts += 1
            if counted - cuts > limit:
                return counted - cuts
    return max(0, counted - cuts)


def release_memory() -> None:
    """Return freed heap pages to the OS (glibc); a no-op elsewhere."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class ChatPromptBuilder:
    """Renders messages with the model's template; fetches, probes and decodes images.

    All CPU work that grows with the request runs in the worker pool, cheapest first: the
    text and the images' headers are sized before anything is decoded, so a prompt that
    cannot fit the context is refused before it costs memory or time.
    """

    def __init__(
        self,
        *,
        render: Callable[..., str],
        tokenize: Callable[[str], list[int]],
        pool: Executor,
        limits: ImageLimits,
        max_images: int,
        fetcher: ImageFetcher,
        max_model_len: int,
        dicomweb: DicomWebSource,
        videos: VideoInputs,
        image_cache: PreparedImageCache | None = None,
        input_modalities: Collection[InputModality] = ("text", "image", "video"),
    ):
        self._render = render
        self._tokenize = tokenize
        self._pool = pool
        self._limits = limits
        self._max_images = max_images
        self._fetcher = fetcher
        self._max_model_len = max_model_len
        self._dicomweb = dicomweb
        self._videos = videos
        self._image_cache = image_cache
        self._input_modalities = input_modalities

    def with_text_steps(
        self, render: Callable[..., str], tokenize: Callable[[str], list[int]]
    ) -> ChatPromptBuilder:
        """This builder rendering and tokenizing another way (/tokenize's template options)."""
        other = copy.copy(self)
        other._render, other._tokenize = render, tokenize
        return other

    async def build(
        self, messages: list[ChatMessage], tools: list[dict[str, Any]] | None = None
    ) -> ChatPrompt:
        """`tools`: function tools in chat completions' shape, rendered by the template."""
        parts = image_parts(messages)
        videos = video_parts(messages)
        self._check_modalities(parts, videos)
        self._check_image_count(len(parts))
        self._videos.check(videos)
        parts = await self.expand_images(parts)
        images_per_part = Counter(param for param, _ in parts)
        (text, token_ids), probed, planned = await asyncio.gather(
            self._in_pool(self._text_tokens, messages, images_per_part, tools),
            self.probe_images(parts),
            self._videos.plan(videos),
        )
        image_tokens = sum(image.num_tokens for image in probed)
        video_tokens = sum(video.num_tokens for video in planned)
        pads = len(parts) + len(planned)
        self._check_context(
            len(token_ids) - pads + image_tokens + video_tokens,
            image_tokens + video_tokens,
            len(parts),
            len(planned),
        )
        images, prepared_videos = await asyncio.gather(
            self.decode_images(probed, parts), self._videos.decode(planned)
        )
        return ChatPrompt(text=text, token_ids=token_ids, images=images, videos=prepared_videos)

    async def expand_images(self, parts: ImageParts) -> ImageParts:
        """Count and inline bytes checked, then a DICOMweb series becomes one part per slice
        (from its metadata), counted again before any image is fetched."""
        self._check_image_count(len(parts))
        inline = sum(
            data_url_decoded_size(part.image_url.url)
            for _, part in parts
            if part.image_url.url.startswith("data:")
        )
        self._check_request_bytes(inline)
        parts = await self._dicomweb.expand_parts(parts, self._max_images)
        self._check_image_count(len(parts))
        return parts

    async def probe_images(self, parts: ImageParts) -> list[ProbedImage]:
        """Every image fetched and its header read: sizes and token costs, nothing decoded."""
        probed = await asyncio.gather(*(self._probe(part, param) for param, part in parts))
        self._check_request_bytes(sum(len(image.encoded.data) for image in probed))
        return list(probed)

    async def _probe(self, part: ImagePart, param: str) -> ProbedImage:
        url, budget = part.image_url.url, self._budget(part)
        if url.startswith("data:"):
            # base64 decoding and the header in one trip to the worker pool: for a small
            # image each trip costs more than the work
            limits = self._limits
            return await self._in_pool(probe_data_url, url, limits, budget, param)
        return await self._in_pool(
            probe_image, await self._fetch(url, param), self._limits, budget, param
        )

    async def decode_images(
        self, probed: list[ProbedImage], parts: ImageParts
    ) -> list[PreparedImage]:
        """The images as the engine receives them (in the worker pool)."""
        images = await asyncio.gather(
            *(
                self._in_pool(
                    decode_image,
                    image,
                    self._limits,
                    _dicom_options(part),
                    param,
                    self._image_cache,
                )
                for image, (param, part) in zip(probed, parts, strict=True)
            )
        )
        for image, (_, part) in zip(images, parts, strict=True):
            image.source = self._dicomweb.audit_record(part.image_url.url)
        return list(images)

    def _check_modalities(self, images: ImageParts, videos: VideoParts) -> None:
        """A part the model's chat template cannot express (found at start-up) is a 400, before
        anything is fetched, decoded or sent to the engine (which would fail on it)."""
        for kind, parts in (("image", images), ("video", videos)):
            if parts and kind not in self._input_modalities:
                raise InvalidRequestError(
                    f"this model does not take {kind} input: its chat template has no {kind} "
                    f"placeholder (it takes {', '.join(self._input_modalities)})",
                    param=parts[0][0],
                    code="unsupported_input",
                )

    def _check_image_count(self, count: int) -> None:
        if count > self._max_images:
            raise InvalidRequestError(
                f"this request has {count} images (a DICOMweb series counts each slice); "
                f"the server accepts at most {self._max_images} per request",
                param="messages",
                code="too_many_images",
            )

    async def _in_pool(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _text_tokens(
        self,
        messages: list[ChatMessage],
        images_per_part: Mapping[str, int],
        tools: list[dict[str, Any]] | None = None,
    ) -> tuple[str, list[int]]:
        """The rendered prompt and its tokens, refusing early a text that cannot fit."""
        tool_text = json.dumps(tools, ensure_ascii=False) if tools else ""
        chars = text_length(messages) + len(tool_text)
        if chars > self._max_model_len:  # only then can the text alone overflow the context
            texts = itertools.chain(message_texts(messages), [tool_text])
            at_least = tokens_at_least(texts, self._tokenize, self._max_model_len)
            if at_least >= self._max_model_len:
                release_memory()
                raise self._too_long(f"more than {at_least} tokens of text")
        text = self._render(_template_messages(messages, images_per_part), tools)
        token_ids = self._tokenize(text)
        if chars > TRIM_AFTER_CHARS:
            release_memory()
        return text, token_ids

    def _check_context(self, total: int, visual_tokens: int, images: int, videos: int) -> None:
        """Refuse, before any image or video is decoded, a prompt that leaves no room to
        answer."""
        if total < self._max_model_len:
            return
        if videos:
            detail = (
                f"{total} tokens, {visual_tokens} of them for {images} image(s) and {videos} "
                "video(s); send shorter or smaller videos (video_url.fps, nframes, max_pixels "
                "or total_pixels)"
            )
        elif images:
            detail = (
                f"{total} tokens, {visual_tokens} of them for {images} image(s); send smaller "
                "images (image_url.detail 'low' or max_pixels)"
            )
        else:
            detail = f"{total} tokens"
        raise self._too_long(detail)

    def _too_long(self, detail: str) -> ContextLengthExceededError:
        return ContextLengthExceededError(
            f"This model's maximum context length is {self._max_model_len} tokens. However, "
            f"the prompt has {detail}, and at least one more is needed to answer.",
            param="messages",
        )

    def _check_request_bytes(self, total: int) -> None:
        if total > self._limits.max_request_image_bytes:
            raise InvalidRequestError(
                f"the images in this request add up to more than the server accepts "
                f"({self._limits.max_request_image_bytes} bytes per request)",
                param="messages",
                code="image_too_large",
            )

    async def _fetch(self, url: str, param: str) -> EncodedImage:
        """A remote image's bytes (a data: URL is decoded with its probe, `_probe`)."""
        from_pacs = await self._dicomweb.fetch(url, param)
        if from_pacs is not None:
            return EncodedImage(data=from_pacs, declared_type="application/dicom")
        return EncodedImage(data=await self._fetcher.fetch(url, param), declared_type=None)

    def _budget(self, part: ImagePart) -> PixelBudget:
        spec = part.image_url
        return self._limits.budget(spec.detail, spec.min_pixels, spec.max_pixels)


def _dicom_options(part: ImagePart) -> DicomOptions:
    window = part.image_url.dicom
    if window is None:
        return DicomOptions()
    return DicomOptions(
        window=window.window, center=window.center, width=window.width, frame=window.frame
    )


def template_input_modalities(
    render: Callable[..., str],
    tokenize: Callable[[str], list[int]],
    placeholders: Mapping[str, int],
) -> list[InputModality]:
    """What the model takes, as its chat template can express it: a probe message holding one
    image (then one video) is rendered, and the kind counts if the prompt holds its placeholder
    token (a template without one drops the part, or refuses it)."""
    found: list[InputModality] = ["text"]
    kinds: tuple[tuple[InputModality, dict[str, str]], ...] = (
        ("image", IMAGE_PART),
        ("video", VIDEO_PART),
    )
    for kind, part in kinds:
        probe = [{"role": "user", "content": [part, {"type": "text", "text": "What is shown?"}]}]
        try:
            token_ids = tokenize(render(probe))
        except Exception:  # the template refused the part (raise_exception)
            continue
        if placeholders[kind] in token_ids:
            found.append(kind)
    return found


def tokenizer_encoder(
    tokenizer: Any, add_special_tokens: bool = False
) -> Callable[[str], list[int]]:
    def encode(text: str) -> list[int]:
        # The template already wrote every special token the model needs.
        return tokenizer.encode(text, add_special_tokens=add_special_tokens)

    return encode


def template_renderer(
    tokenizer: Any,
    template: str,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
) -> Callable[..., str]:
    """render(messages, tools=None): the checkpoint's template, or for a conversation with
    tools that template only if it renders tools (see tool_template)."""
    tool_template = template if handles_tools(template) else QWEN_VL_TOOL_TEMPLATE

    def render(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        chosen = tool_template if uses_tools(messages, tools) else template
        return tokenizer.apply_chat_template(
            messages,
            tools=tools or None,
            chat_template=chosen,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
        )

    return render
