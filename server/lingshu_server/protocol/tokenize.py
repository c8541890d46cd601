"""vLLM's /tokenize and /detokenize wire models. /tokenize takes a `prompt`, or chat `messages`
(images, videos and `tools` included, counted as the chat request would count them)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from lingshu_server.protocol.common import (
    ChatMessage,
    ChatTool,
    ResponseModel,
    Text,
    WireModel,
    check_unique_names,
)


class TokenizeRequest(WireModel):
    model: Text | None = None
    prompt: Text | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    # vLLM's default: special tokens (a BOS) for a prompt; none beyond the template's for chat
    add_special_tokens: bool | None = None
    # chat only: end with the assistant's turn opened (default), or leave the last message open
    add_generation_prompt: bool | None = None
    continue_final_message: bool = False
    return_token_strs: bool | None = False
    # chat only: function tools, rendered as a chat request with these tools renders them
    tools: list[ChatTool] | None = None
    # vLLM options this server does not take from requests
    chat_template: Any = None
    chat_template_kwargs: Any = None

    @field_validator("chat_template", "chat_template_kwargs")
    @classmethod
    def _server_template_only(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            raise ValueError(
                f"{info.field_name} is not accepted: the count is the one the model's own "
                "chat template gives"
            )
        return value

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, tools: list[ChatTool] | None) -> list[ChatTool] | None:
        check_unique_names([tool.function.name for tool in tools or []])
        return tools

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give either `prompt` (a string) or `messages` (chat messages)")
        if self.prompt is not None and (
            self.add_generation_prompt is not None or self.continue_final_message or self.tools
        ):
            raise ValueError(
                "add_generation_prompt, continue_final_message and tools apply to `messages` only"
            )
        if self.continue_final_message and self.add_generation_prompt:
            raise ValueError(
                "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
            )
        return self

    @property
    def generation_prompt(self) -> bool:
        if self.add_generation_prompt is None:
            return not self.continue_final_message
        return self.add_generation_prompt


class TokenizeResponse(ResponseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(WireModel):
    model: Text | None = None
    tokens: list[int]


class DetokenizeResponse(ResponseModel):
    prompt: str
