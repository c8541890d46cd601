"""Chat completions on the wire: the request, the answer and its streamed chunks."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_serializer

from lingshu_server.protocol.common import (
    ChatMessage,
    ChatTool,
    CompletionHeader,
    NamedToolChoice,
    ResponseFormat,
    ResponseModel,
    SamplingRequest,
    ToolChoice,
    Usage,
    check_tool_choice,
    check_unique_names,
    without_unset_ids,
)


class ChatCompletionRequest(SamplingRequest):
    """A chat-completion request: messages, and chat's own logprobs and response format."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[ChatTool] | None = None  # [] is no tools, as vLLM takes it
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = True

    @field_validator("logprobs")
    @classmethod
    def _logprobs_null_is_false(cls, value: bool | None) -> bool:
        return bool(value)

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, tools: list[ChatTool] | None) -> list[ChatTool] | None:
        check_unique_names([tool.function.name for tool in tools or []])
        return tools

    @field_validator("tool_choice")
    @classmethod
    def _choice_among_tools(
        cls, choice: str | NamedToolChoice | None, info: ValidationInfo
    ) -> str | NamedToolChoice | None:
        tools = info.data.get("tools")
        named = choice.function.name if isinstance(choice, NamedToolChoice) else None
        check_tool_choice(choice, named, [t.function.name for t in tools] if tools else None)
        return choice

    @field_validator("parallel_tool_calls")
    @classmethod
    def _parallel_default(cls, value: bool | None) -> bool:
        return True if value is None else value

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_need_logprobs(cls, top: int | None, info: ValidationInfo) -> int | None:
        if top and not info.data.get("logprobs"):
            raise ValueError("top_logprobs requires logprobs to be true")
        return top

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def max_tokens_param(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens else "max_tokens"

    @property
    def num_logprobs(self) -> int | None:
        """Top alternatives per token when logprobs are asked for, else None."""
        return (self.top_logprobs or 0) if self.logprobs else None


class TopLogprob(ResponseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(ResponseModel):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None  # OpenAI's: the refusal's tokens (none here)


class FunctionCall(ResponseModel):
    name: str
    arguments: str  # the JSON object's text, as generated


class ToolCall(ResponseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(ResponseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    # OpenAI's URL citations (web search); always [] here, as OpenAI sends it without search.
    # Stream deltas carry no annotations (nor do OpenAI's).
    annotations: list[Any] = Field(default_factory=list)
    tool_calls: list[ToolCall] | None = None

    @model_serializer(mode="wrap")
    def _drop_no_calls(self, handler: Any) -> dict[str, Any]:
        return without_unset_ids(handler(self), "tool_calls")


class Choice(ResponseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None
    token_ids: list[int] | None = None

    @model_serializer(mode="wrap")
    def _drop_unset_ids(self, handler: Any) -> dict[str, Any]:
        return without_unset_ids(handler(self), "token_ids")


class ChatCompletion(CompletionHeader):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[Choice]
    usage: Usage
    prompt_token_ids: list[int] | None = None

    @model_serializer(mode="wrap")
    def _drop_unset_ids(self, handler: Any) -> dict[str, Any]:
        return without_unset_ids(handler(self), "prompt_token_ids")


class FunctionCallDelta(ResponseModel):
    """The name comes once, in a call's first delta; the arguments in fragments after it."""

    name: str | None = None
    arguments: str | None = None

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ToolCallDelta(ResponseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class Delta(ResponseModel):
    """OpenAI omits unset delta fields: {"role": ..} first, {"content": ..} next, {} last."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None

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
        return without_unset_ids(handler(self), "token_ids")


class ChatCompletionChunk(CompletionHeader):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChunkChoice]
    usage: Usage | None = None
    prompt_token_ids: list[int] | None = None  # on the first chunk, with return_token_ids

    @model_serializer(mode="wrap")
    def _drop_unset_ids(self, handler: Any) -> dict[str, Any]:
        return without_unset_ids(handler(self), "prompt_token_ids")
