"""OpenAI wire models: chat-completion requests, responses, stream chunks, models, errors."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator


class WireModel(BaseModel):
    """Base of every request model: unknown fields are ignored, as OpenAI's API does."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class ResponseModel(BaseModel):
    model_config = ConfigDict(protected_namespaces=())


# ---------------------------------------------------------------- requests


class DicomWindow(WireModel):
    """Per-image DICOM display options (an extension to OpenAI's image_url object)."""

    window: Literal["lung", "mediastinum", "bone", "brain", "abdomen"] | None = None
    center: float | None = None
    width: float | None = Field(default=None, gt=0)
    frame: int | None = Field(default=None, ge=0)
    # DICOMweb series URLs: how many evenly spaced slices to send (default 1, the middle one)
    slices: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _center_with_width(self) -> DicomWindow:
        if (self.center is None) != (self.width is None):
            raise ValueError("a DICOM window needs both center and width")
        if self.window is not None and self.center is not None:
            raise ValueError("give either a named window or center and width, not both")
        return self


class ImageURL(WireModel):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None
    # Extensions: an explicit pixel budget (clamped to the server's caps) and DICOM windowing.
    min_pixels: int | None = Field(default=None, ge=1)
    max_pixels: int | None = Field(default=None, ge=1)
    dicom: DicomWindow | None = None

    @model_validator(mode="after")
    def _budget_ordered(self) -> ImageURL:
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels must not exceed max_pixels")
        return self


class TextPart(WireModel):
    type: Literal["text"]
    text: str


class ImagePart(WireModel):
    type: Literal["image_url"]
    image_url: ImageURL

    @model_validator(mode="before")
    @classmethod
    def _accept_bare_url(cls, data: Any) -> Any:
        return _bare_url(data, "image_url")


def _bare_url(data: Any, key: str) -> Any:
    """Some clients send {"type": "image_url", "image_url": "data:..."}; OpenAI's own SDK
    accepts the object form only, but the string form is unambiguous."""
    if isinstance(data, dict) and isinstance(data.get(key), str):
        return {**data, key: {"url": data[key]}}
    return data


class VideoURL(WireModel):
    """vLLM's `video_url` object, with qwen-vl-utils' sampling options as extensions (each
    clamped to the server's caps): `fps` or `nframes`, and the pixel budget."""

    url: str = Field(min_length=1)
    fps: float | None = Field(default=None, gt=0.0, le=60.0)
    nframes: int | None = Field(default=None, ge=2)
    min_pixels: int | None = Field(default=None, ge=1)
    max_pixels: int | None = Field(default=None, ge=1)
    total_pixels: int | None = Field(default=None, ge=1)
    dicom: DicomWindow | None = None

    @model_validator(mode="after")
    def _options_consistent(self) -> VideoURL:
        if self.fps is not None and self.nframes is not None:
            raise ValueError("give either fps or nframes, not both")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels must not exceed max_pixels")
        if self.dicom is not None and (self.dicom.frame is not None or self.dicom.slices):
            raise ValueError("dicom.frame and dicom.slices apply to image_url parts only")
        return self


class VideoPart(WireModel):
    type: Literal["video_url"]
    video_url: VideoURL

    @model_validator(mode="before")
    @classmethod
    def _accept_bare_url(cls, data: Any) -> Any:
        return _bare_url(data, "video_url")


ContentPart = Annotated[TextPart | ImagePart | VideoPart, Field(discriminator="type")]


class ChatMessage(WireModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _content_required(self) -> ChatMessage:
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs content")
        return self


class JSONSchemaFormat(WireModel):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(WireModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None
    # Generated JSON is compact unless the client asks for whitespace (vLLM's JSON grammar
    # otherwise lets a weak model emit whitespace until max_tokens).
    allow_whitespace: bool = False

    @model_validator(mode="after")
    def _schema_present(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs a json_schema object")
        return self


class StreamOptions(WireModel):
    include_usage: bool = False


class ChatCompletionRequest(WireModel):
    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=16)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    user: str | None = None
    # vLLM extras
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    ignore_eos: bool = False
    min_tokens: int = Field(default=0, ge=0)
    # vLLM's: the prompt's token ids (image tokens expanded) and each choice's generated ids
    return_token_ids: bool = False
    # Extension: seconds this request may generate (at most the server's --request-timeout)
    request_timeout: float | None = Field(default=None, gt=0.0)

    @model_validator(mode="after")
    def _check_combinations(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("stop accepts at most 4 sequences")
        return self

    @property
    def stop_sequences(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


# ---------------------------------------------------------------- responses


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class TopLogprob(ResponseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(ResponseModel):
    content: list[TokenLogprob] | None


class Usage(ResponseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(ResponseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None


def _without_unset_ids(data: dict[str, Any], *names: str) -> dict[str, Any]:
    """Token id fields appear only when the request asked for them (return_token_ids)."""
    for name in names:
        if data.get(name) is None:
            data.pop(name, None)
    return data


class Choice(ResponseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None
    token_ids: list[int] | None = None

    @model_serializer(mode="wrap")
    def _drop_unset_ids(self, handler: Any) -> dict[str, Any]:
        return _without_unset_ids(handler(self), "token_ids")


class CompletionHeader(ResponseModel):
    """Fields shared by a completion and every chunk of its stream."""

    id: str
    object: str  # each subclass pins it; declared here to keep OpenAI's field order
    created: int
    model: str
    system_fingerprint: str | None = None


class ChatCompletion(CompletionHeader):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[Choice]
    usage: Usage
    prompt_token_ids: list[int] | None = None

    @model_serializer(mode="wrap")
    def _drop_unset_ids(self, handler: Any) -> dict[str, Any]:
        return _without_unset_ids(handler(self), "prompt_token_ids")


class Delta(ResponseModel):
    """OpenAI omits unset delta fields: {"role": ..} first, {"content": ..} next, {} last."""

    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ChunkChoice(ResponseModel):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None
    token_ids: list[int] | None = None

    @model_serializer(mode="wrap")
    def _drop_unset_ids(self, handler: Any) -> dict[str, Any]:
        return _without_unset_ids(handler(self), "token_ids")


class ChatCompletionChunk(CompletionHeader):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChunkChoice]
    usage: Usage | None = None
    prompt_token_ids: list[int] | None = None  # on the first chunk, with return_token_ids

    @model_serializer(mode="wrap")
    def _drop_unset_ids(self, handler: Any) -> dict[str, Any]:
        return _without_unset_ids(handler(self), "prompt_token_ids")


class ModelCard(ResponseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "lingshu-server"
    root: str
    max_model_len: int


class ModelList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(ResponseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(ResponseModel):
    error: ErrorBody
