"""OpenAI Responses API wire models: the request, the response object and its stream events.

`store` (absent: the server's --store-responses) keeps the response for `GET`, `DELETE`,
`input_items` and a later request's `previous_response_id`; `conversation` names a conversation
whose items come before the input and which the input and output join. `background` is refused
with a 400 that says so.
Extensions beside OpenAI's fields, as in chat completions: per-image `min_pixels`,
`max_pixels` and `dicom` on `input_image`, `allow_whitespace` in `text.format`, `seed` and
`request_timeout`.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Discriminator, Field, Tag, field_validator, model_validator

from lingshu_server.protocol.common import (
    FUNCTION_NAME,
    INT64_MIN,
    UINT64_MAX,
    DicomWindow,
    ResponseModel,
    Text,
    WireModel,
    check_arguments,
    check_tool_choice,
    check_unique_names,
)

# ---------------------------------------------------------------- requests


class InputText(WireModel):
    type: Literal["input_text"]
    text: Text


class OutputText(WireModel):
    """Text of an earlier answer, sent back as part of the conversation."""

    type: Literal["output_text"]
    text: Text


class InputImage(WireModel):
    type: Literal["input_image"]
    image_url: Text | None = Field(default=None, min_length=1)
    file_id: Text | None = None
    detail: Literal["auto", "low", "high"] | None = None
    # Extensions, as on chat completions' image_url object
    min_pixels: int | None = Field(default=None, ge=1)
    max_pixels: int | None = Field(default=None, ge=1)
    dicom: DicomWindow | None = None

    @model_validator(mode="after")
    def _url_given(self) -> InputImage:
        if self.file_id is not None:
            raise ValueError(
                "file_id is not supported (this server stores no files); send the image as "
                "image_url, a data URL"
            )
        if self.image_url is None:
            raise ValueError("an input_image needs an image_url")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels must not exceed max_pixels")
        return self


def _tagged(prefix: str, default: str | None = None) -> Any:
    """A discriminator on `type` whose tags carry a prefix with a dash, so that an error's
    param reads `input[0].content[1].image_url`, not `...[1].input_image.image_url`."""

    def tag(value: Any) -> str | None:
        kind = (
            value.get("type", default) if isinstance(value, dict) else getattr(value, "type", None)
        )
        return f"{prefix}-{kind}" if isinstance(kind, str) else None

    return tag


InputContent = Annotated[
    Annotated[InputText, Tag("part-input_text")]
    | Annotated[OutputText, Tag("part-output_text")]
    | Annotated[InputImage, Tag("part-input_image")],
    Discriminator(
        _tagged("part"),
        custom_error_type="invalid_content_part",
        custom_error_message="a content part is input_text, input_image or output_text",
    ),
]


class ConversationRef(WireModel):
    id: Text = Field(min_length=1)


class MessageItem(WireModel):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: Text | list[InputContent]


class FunctionCallItem(WireModel):
    """A call from an earlier answer (its `function_call` output item), sent back."""

    type: Literal["function_call"]
    call_id: Text = Field(min_length=1)
    name: Text = Field(pattern=FUNCTION_NAME)
    arguments: Annotated[Text, AfterValidator(check_arguments)]


class FunctionCallOutputItem(WireModel):
    """What the client's function returned for a call."""

    type: Literal["function_call_output"]
    call_id: Text = Field(min_length=1)
    output: Text | list[InputText]


InputItem = Annotated[
    Annotated[MessageItem, Tag("item-message")]
    | Annotated[FunctionCallItem, Tag("item-function_call")]
    | Annotated[FunctionCallOutputItem, Tag("item-function_call_output")],
    Discriminator(
        _tagged("item", default="message"),  # an easy input message has no type
        custom_error_type="invalid_input_item",
        custom_error_message="an input item is a message, function_call or function_call_output",
    ),
]


class FunctionTool(WireModel):
    """Responses' flat function tool: {"type": "function", "name", "parameters", ...}."""

    type: str
    name: Text = Field(default="", pattern=FUNCTION_NAME)
    description: Text | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("type")
    @classmethod
    def _function_only(cls, kind: str) -> str:
        if kind != "function":
            raise ValueError(f"tools of type '{kind}' are not supported; only function tools")
        return kind


class FunctionChoice(WireModel):
    type: Literal["function"]
    name: Text


class TextFormat(WireModel):
    type: Literal["text", "json_object", "json_schema"]
    name: Text = "response"
    description: Text | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    allow_whitespace: bool = False  # extension, as in chat's response_format

    @model_validator(mode="after")
    def _schema_present(self) -> TextFormat:
        if self.type == "json_schema" and self.schema_ is None:
            raise ValueError("a json_schema format needs a schema")
        return self


class TextConfig(WireModel):
    format: TextFormat | None = None


class ResponsesRequest(WireModel):
    input: Text | list[InputItem]
    model: Text | None = None
    instructions: Text | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    text: TextConfig | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionChoice | None = None
    parallel_tool_calls: bool | None = True
    stream: bool | None = False
    store: bool | None = None
    previous_response_id: Text | None = Field(default=None, min_length=1)
    conversation: Text | ConversationRef | None = None
    background: bool | None = None
    truncation: Literal["disabled"] | None = None
    metadata: dict[str, Text] | None = None
    user: Text | None = None
    # Extensions
    seed: int | None = Field(default=None, ge=INT64_MIN, le=UINT64_MAX)
    request_timeout: float | None = Field(default=None, gt=0.0)

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: str | list[Any]) -> str | list[Any]:
        if isinstance(value, list) and not value:
            raise ValueError("input must hold at least one item")
        return value

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, tools: list[FunctionTool] | None) -> list[FunctionTool] | None:
        for tool in tools or []:
            if not tool.name:
                raise ValueError("a function tool needs a name")
        check_unique_names([tool.name for tool in tools or []])
        return tools

    @field_validator("tool_choice")
    @classmethod
    def _choice_among_tools(cls, choice: Any, info: Any) -> Any:
        tools = info.data.get("tools")
        named = choice.name if isinstance(choice, FunctionChoice) else None
        check_tool_choice(choice, named, [t.name for t in tools] if tools else None)
        return choice

    @field_validator("parallel_tool_calls", "stream")
    @classmethod
    def _null_is_default(cls, value: bool | None, info: Any) -> bool:
        return cls.model_fields[info.field_name].default if value is None else value

    @model_validator(mode="after")
    def _one_history(self) -> ResponsesRequest:
        if self.previous_response_id is not None and self.conversation is not None:
            raise ValueError(
                "previous_response_id and conversation cannot both be given: a response "
                "follows either an earlier response or a conversation"
            )
        return self

    @property
    def conversation_id(self) -> str | None:
        conversation = self.conversation
        return conversation.id if isinstance(conversation, ConversationRef) else conversation

    @field_validator("background")
    @classmethod
    def _foreground(cls, background: bool | None) -> bool | None:
        if background:
            raise ValueError("true is not supported: responses are answered in the request")
        return background


# ---------------------------------------------------------------- the response object


def response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


def item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


ItemStatus = Literal["in_progress", "completed", "incomplete"]


class OutputTextPart(ResponseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class OutputMessage(ResponseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: ItemStatus
    content: list[OutputTextPart]


class FunctionCallOutput(ResponseModel):
    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


OutputItem = Annotated[OutputMessage | FunctionCallOutput, Field(discriminator="type")]


class InputTokensDetails(ResponseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(ResponseModel):
    reasoning_tokens: int = 0


class ResponseUsage(ResponseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class IncompleteDetails(ResponseModel):
    reason: Literal["max_output_tokens"]


class ResponseError(ResponseModel):
    code: str
    message: str


class ResponseConversation(ResponseModel):
    id: str


class ResponsesResponse(ResponseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem]
    parallel_tool_calls: bool
    previous_response_id: str | None = None
    conversation: ResponseConversation | None = None
    reasoning: None = None
    store: bool = False
    background: Literal[False] = False
    temperature: float | None = None
    text: dict[str, Any]  # the request's text config, {"format": {"type": "text"}} by default
    tool_choice: str | dict[str, str]
    tools: list[dict[str, Any]]
    top_p: float | None = None
    truncation: Literal["disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    # Required by the Open Responses schema: when it completed, the values it ran with (the
    # service fills temperature and top_p with them too, never null), and fields this server
    # has no use for at their null or default value
    completed_at: int | None = None
    presence_penalty: float
    frequency_penalty: float
    top_logprobs: int = 0
    max_tool_calls: int | None = None
    service_tier: Literal["default"] = "default"
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    # Extension, as chat completions': the configuration that answered (services/fingerprint)
    system_fingerprint: str


# ---------------------------------------------------------------- stream events


class ResponseEvent(ResponseModel):
    type: Literal[
        "response.created",
        "response.in_progress",
        "response.completed",
        "response.incomplete",
        "response.failed",
    ]
    sequence_number: int
    response: ResponsesResponse


class OutputItemEvent(ResponseModel):
    type: Literal["response.output_item.added", "response.output_item.done"]
    sequence_number: int
    output_index: int
    item: OutputItem


class ContentPartEvent(ResponseModel):
    type: Literal["response.content_part.added", "response.content_part.done"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    part: OutputTextPart


class TextDeltaEvent(ResponseModel):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[Any] = Field(default_factory=list)


class TextDoneEvent(ResponseModel):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[Any] = Field(default_factory=list)


class ArgumentsDeltaEvent(ResponseModel):
    type: Literal["response.function_call_arguments.delta"] = (
        "response.function_call_arguments.delta"
    )
    sequence_number: int
    item_id: str
    output_index: int
    delta: str


class ArgumentsDoneEvent(ResponseModel):
    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    sequence_number: int
    item_id: str
    output_index: int
    name: str
    arguments: str


class ErrorPayload(ResponseModel):
    type: str
    code: str | None
    message: str
    param: str | None


class ErrorEvent(ResponseModel):
    """OpenAI's error event has the fields at the top; Open Responses' nests them in `error`:
    both are sent."""

    type: Literal["error"] = "error"
    sequence_number: int
    code: str | None
    message: str
    param: str | None
    error: ErrorPayload


StreamEvent = Annotated[
    ResponseEvent
    | OutputItemEvent
    | ContentPartEvent
    | TextDeltaEvent
    | TextDoneEvent
    | ArgumentsDeltaEvent
    | ArgumentsDoneEvent
    | ErrorEvent,
    Field(discriminator="type"),
]
