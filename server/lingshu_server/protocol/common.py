"""Wire models every API shares: content parts (text, images, DICOM options, video), messages,
tools, response formats, sampling fields, usage, models and the server status."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

# Integers travel to the engine core as MessagePack, which holds signed or unsigned 64 bits.
INT64_MIN = -(2**63)
UINT64_MAX = 2**64 - 1
INT32_MAX = 2**31 - 1
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class WireModel(BaseModel):
    """Base of every request model: unknown fields are ignored, as OpenAI's API does. Types are
    strict, as OpenAI's are: "10" is not an integer, "yes" not a boolean, 10.0 not an integer
    (an integer is still a number); NaN and Infinity are not numbers."""

    model_config = ConfigDict(
        extra="ignore", protected_namespaces=(), strict=True, allow_inf_nan=False
    )


def _encodable(text: str) -> str:
    # JSON's \ud800 escapes decode to lone surrogates, which no UTF-8 tokenizer can encode.
    if not text.isascii() and _LONE_SURROGATE.search(text):
        raise ValueError("the text holds a lone UTF-16 surrogate (not valid Unicode)")
    return text


Text = Annotated[str, AfterValidator(_encodable)]


class ResponseModel(BaseModel):
    model_config = ConfigDict(protected_namespaces=())


# ---------------------------------------------------------------- requests


# Where the window that was applied came from: a closed set, named once here (the decoder
# reports it, the preview shows it).
WindowSource = Literal[
    "request",  # the request's center and width
    "request_preset",  # the request's named CT window
    "file_voi_lut",  # the file's VOI LUT sequence
    "file_window",  # the file's Window Center / Width (the first pair)
    "default_preset",  # CT without either: the server's --dicom-default-ct-window
    "full_range",  # the image's own minimum to maximum
]


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
    url: Text = Field(min_length=1)
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
    text: Text


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


# OpenAI's rule for function names; it also keeps a name safe inside the grammar's literals.
FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"


def check_arguments(arguments: str) -> str:
    """An earlier call's arguments: a JSON object's text (the template writes them back)."""
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        raise ValueError("the arguments of a tool call must be a JSON object") from None
    if not isinstance(parsed, dict):
        raise ValueError("the arguments of a tool call must be a JSON object")
    return arguments


class CalledFunction(WireModel):
    """A function call in an earlier assistant turn."""

    name: Text = Field(pattern=FUNCTION_NAME)
    arguments: Annotated[Text, AfterValidator(check_arguments)]


class AssistantToolCall(WireModel):
    id: Text = Field(min_length=1)
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatMessage(WireModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[ContentPart] | None = None
    name: Text | None = None
    # assistant turns that called tools
    tool_calls: list[AssistantToolCall] | None = Field(default=None, min_length=1)
    tool_call_id: Text | None = None  # tool turns: the call this result answers

    @model_validator(mode="after")
    def _content_required(self) -> ChatMessage:
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs content")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if self.role == "tool":
            if not self.tool_call_id:
                raise ValueError("a tool message needs the tool_call_id it answers")
            if isinstance(self.content, list) and not all(
                isinstance(part, TextPart) for part in self.content
            ):
                raise ValueError("a tool message holds text only")
        return self


class FunctionDefinition(WireModel):
    name: Text = Field(pattern=FUNCTION_NAME)
    description: Text | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema; absent: no arguments
    strict: bool | None = None


class ChatTool(WireModel):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(WireModel):
    name: Text


class NamedToolChoice(WireModel):
    type: Literal["function"]
    function: FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


def check_unique_names(names: list[str]) -> None:
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"two tools are named '{duplicates[0]}'; names must be unique")


def check_tool_choice(choice: object, named: str | None, names: list[str] | None) -> None:
    """OpenAI's rules for tool_choice (`named`: the function it names, if it names one);
    `auto` with no tools is harmless and accepted."""
    if choice in (None, "none", "auto"):
        return
    if not names:
        raise ValueError("tool_choice is only allowed when tools are given")
    if named is not None and named not in names:
        raise ValueError(f"the function '{named}' is not among the tools")


class JSONSchemaFormat(WireModel):
    name: Text = "response"
    description: Text | None = None
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


class SamplingRequest(WireModel):
    """Fields every generating request shares (chat and completions), with one set of rules.
    The rules mirror what vLLM's SamplingParams and its MessagePack transport would refuse, so
    such values are a 400 naming the param, never a 500 from the engine; rules that need the
    server's settings are in services/sampling.py."""

    model: Text | None = None
    # OpenAI's spec lets these five be null, meaning the default (see _null_is_default)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: Text | list[Text] | None = None
    seed: int | None = Field(default=None, ge=INT64_MIN, le=UINT64_MAX)
    n: int | None = Field(default=1, ge=1, le=16)
    presence_penalty: float | None = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=0.0, ge=-2.0, le=2.0)
    user: Text | None = None
    # vLLM extras
    top_k: int | None = Field(default=None, ge=-1, le=INT32_MAX)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    ignore_eos: bool = False
    min_tokens: int = Field(default=0, ge=0)
    # vLLM's: the prompt's token ids (image tokens expanded) and each choice's generated ids
    return_token_ids: bool = False
    # Extension: seconds this request may generate (at most the server's --request-timeout)
    request_timeout: float | None = Field(default=None, gt=0.0)

    @field_validator("stream", "n", "presence_penalty", "frequency_penalty")
    @classmethod
    def _null_is_default(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            return value
        assert info.field_name is not None  # a field validator always knows its field
        return cls.model_fields[info.field_name].default

    @field_validator("stop")
    @classmethod
    def _stop_sequences(cls, stop: str | list[str] | None) -> str | list[str] | None:
        sequences = [stop] if isinstance(stop, str) else stop or []
        if len(sequences) > 4:
            raise ValueError("stop accepts at most 4 sequences")
        if any(not sequence for sequence in sequences):
            raise ValueError("a stop sequence must not be empty")
        return stop

    @field_validator("n")
    @classmethod
    def _n_needs_sampling(cls, n: int, info: ValidationInfo) -> int:
        if n > 1 and info.data.get("temperature") == 0:
            raise ValueError("n must be 1 with temperature 0 (greedy decoding has one answer)")
        return n

    @property
    def stop_sequences(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    # `n` and the penalties once validated: _null_is_default turned a null into the default.
    @property
    def num_choices(self) -> int:
        assert self.n is not None
        return self.n

    @property
    def presence_penalty_value(self) -> float:
        assert self.presence_penalty is not None
        return self.presence_penalty

    @property
    def frequency_penalty_value(self) -> float:
        assert self.frequency_penalty is not None
        return self.frequency_penalty

    @property
    def max_tokens_param(self) -> str:
        """The param that set requested_max_tokens, for error messages."""
        return "max_tokens"


# ---------------------------------------------------------------- responses


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class PromptTokensDetails(ResponseModel):
    cached_tokens: int = 0  # prompt tokens found in the engine's prefix cache


class Usage(ResponseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> Usage:
        """OpenAI's usage: the total, and how much of the prompt the prefix cache held."""
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=cached_tokens),
        )


def tool_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def without_unset_ids(data: dict[str, Any], *names: str) -> dict[str, Any]:
    """Token id fields appear only when the request asked for them (return_token_ids)."""
    for name in names:
        if data.get(name) is None:
            data.pop(name, None)
    return data


class CompletionHeader(ResponseModel):
    """Fields shared by a completion and every chunk of its stream."""

    id: str
    object: str  # each subclass pins it; declared here to keep OpenAI's field order
    created: int
    model: str
    # the configuration that answered (services/fingerprint.py): two answers with the same
    # fingerprint and seed came from the same configuration
    system_fingerprint: str


InputModality = Literal["text", "image", "video"]


class ModelCard(ResponseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "lingshu-server"
    root: str
    parent: str | None = None  # a LoRA adapter's base model (vLLM's field)
    max_model_len: int
    # Extensions: what the model takes (as its chat template can express it) and the
    # system_fingerprint its answers carry
    input_modalities: list[InputModality]
    system_fingerprint: str


class ModelList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ServerStatus(ResponseModel):
    """/health and /ready: the server's stage (an extension, not an OpenAI type)."""

    status: str = Field(description='"ok" while the engine serves, else the stage')
    stage: Literal[
        "starting",
        "checking_model",
        "loading_engine",
        "preparing_chat_template",
        "ready",
        "draining",
        "engine_dead",
        "failed",
    ]
    elapsed_s: float = Field(description="Seconds since the server started")
    error: str | None = Field(default=None, description="Why start-up failed, if it did")
    database: str | None = Field(
        default=None,
        description='/health, once stored state is in use: "ok", or why the database does not '
        "answer",
    )
