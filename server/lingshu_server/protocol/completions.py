"""OpenAI's (legacy) completions wire models: a prompt in, text out, as vLLM serves them."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_serializer

from lingshu_server.protocol.common import (
    CompletionHeader,
    ResponseModel,
    SamplingRequest,
    Text,
    Usage,
    without_unset_ids,
)

# Prompts one request may carry (each runs as its own engine request, `n` choices each).
MAX_PROMPTS = 64
# Alternatives per token a request may ask for (vLLM's default --max-logprobs).
MAX_LOGPROBS = 20
# Tokens per choice when a request names no max_tokens (OpenAI's and vLLM's default).
DEFAULT_MAX_TOKENS = 16

TokenIds = list[int]
Prompt = Text | list[Text] | TokenIds | list[TokenIds]


class CompletionRequest(SamplingRequest):
    """`prompt` is a string, a list of strings, a list of token ids or a list of such lists."""

    prompt: Prompt
    # Default: OpenAI's and vLLM's 16 tokens (within --max-tokens-cap). 0 with `echo` returns
    # the prompt alone.
    max_tokens: int | None = Field(default=None, ge=0)
    echo: bool | None = Field(default=False, validate_default=True)
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    suffix: Text | None = None
    best_of: int | None = Field(default=None, ge=1)
    # vLLM's: add the tokenizer's special tokens (BOS) to a text prompt
    add_special_tokens: bool = True

    @field_validator("echo")
    @classmethod
    def _echo_for_no_tokens(cls, echo: bool | None, info: ValidationInfo) -> bool:
        if info.data.get("max_tokens") == 0 and not echo:
            raise ValueError("max_tokens 0 needs echo: true (it returns the prompt, scored)")
        return bool(echo)

    @field_validator("prompt")
    @classmethod
    def _prompts_present(cls, prompt: Any) -> Any:
        if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
            prompts = [prompt]
        elif not prompt:
            raise ValueError("the prompt list is empty")
        elif len(prompt) > MAX_PROMPTS:
            raise ValueError(f"{len(prompt)} prompts; a request may carry at most {MAX_PROMPTS}")
        else:
            prompts = prompt
        if any(len(item) == 0 for item in prompts):
            raise ValueError("a prompt is empty")
        return prompt

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, suffix: str | None) -> str | None:
        if suffix:
            raise ValueError(
                "suffix is not supported: Qwen2.5-VL models have no fill-in-the-middle format"
            )
        return suffix

    @field_validator("best_of")
    @classmethod
    def _best_of_is_n(cls, best_of: int | None, info: ValidationInfo) -> int | None:
        if best_of is not None and best_of != info.data.get("n"):
            raise ValueError(
                "best_of is not supported (vLLM 0.32 removed it); ask for `n` choices instead"
            )
        return best_of

    @property
    def prompts(self) -> list[str | list[int]]:
        """Each prompt of the request, as a string or as token ids."""
        if isinstance(self.prompt, str) or isinstance(self.prompt[0], int):
            return [self.prompt]
        return list(self.prompt)

    @property
    def echo_only(self) -> bool:
        return self.max_tokens == 0

    @property
    def requested_max_tokens(self) -> int | None:
        # the engine generates one token for an echo-only request; it is not returned
        return 1 if self.echo_only else self.max_tokens


class CompletionLogprobs(ResponseModel):
    """OpenAI's legacy shape: per token its text, logprob, top alternatives and the offset of
    the token in the choice's text (the first prompt token, when echoed, has no logprob)."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(ResponseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    # vLLM's, with return_token_ids: the prompt's ids (on a choice's first chunk) and the
    # generated ones
    prompt_token_ids: list[int] | None = None
    token_ids: list[int] | None = None

    @model_serializer(mode="wrap")
    def _drop_unset_ids(self, handler: Any) -> dict[str, Any]:
        return without_unset_ids(handler(self), "prompt_token_ids", "token_ids")


class Completion(CompletionHeader):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage


class CompletionChunk(CompletionHeader):
    """One event of a stream: OpenAI uses the same object name as the whole completion."""

    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage | None = None


def text_completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"
