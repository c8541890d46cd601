"""/tokenize and /detokenize: a prompt's or a chat's tokens as the engine will see them (each
image and video placeholder expanded to its visual tokens), and token ids back to text."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import Any, TypeVar

from lingshu_server.core.metrics import Metrics
from lingshu_server.engine.interface import Engine
from lingshu_server.protocol.tokenize import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from lingshu_server.services.chat_prompt import (
    TRIM_AFTER_CHARS,
    ChatPrompt,
    ChatPromptBuilder,
    release_memory,
    template_renderer,
    tokenizer_encoder,
)
from lingshu_server.services.completions import check_token_ids
from lingshu_server.services.models import ServedModels
from lingshu_server.services.request_records import record_prompt, record_text_prompt
from lingshu_server.services.tool_template import tool_definitions

T = TypeVar("T")
# (add_generation_prompt, continue_final_message, add_special_tokens) as a chat request renders
CHAT_OPTIONS = (True, False, False)


def expanded_ids(prompt: ChatPrompt, image_pad: int, video_pad: int) -> Iterator[int]:
    """The prompt's ids with each image's and video's single pad repeated once per visual
    token, as the engine's processor expands them."""
    images = iter(prompt.images)
    videos = iter(prompt.videos)
    for token in prompt.token_ids:
        if token == image_pad:
            yield from [token] * next(images).num_tokens
        elif token == video_pad:
            yield from [token] * next(videos).num_tokens
        else:
            yield token


class TokenizeService:
    def __init__(
        self,
        *,
        engine: Engine,
        models: ServedModels,
        prompts: ChatPromptBuilder,
        template: str,
        pool: Executor,
        metrics: Metrics,
    ):
        self._engine = engine
        self._models = models
        self._template = template
        self._pool = pool
        self._metrics = metrics
        self._builders = {CHAT_OPTIONS: prompts}

    def _builder(self, request: TokenizeRequest) -> ChatPromptBuilder:
        """The chat's prompt builder, rendering with the request's template options."""
        key = (
            request.generation_prompt,
            request.continue_final_message,
            bool(request.add_special_tokens),  # vLLM's default for chat: none added
        )
        if key not in self._builders:
            tokenizer = self._engine.tokenizer
            chat = self._builders[CHAT_OPTIONS]
            self._builders[key] = chat.with_text_steps(
                template_renderer(tokenizer, self._template, key[0], key[1]),
                tokenizer_encoder(tokenizer, key[2]),
            )
        return self._builders[key]

    async def _in_pool(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def tokenize(self, request: TokenizeRequest) -> TokenizeResponse:
        self._models.resolve(request.model)
        started = time.perf_counter()
        tokenizer = self._engine.tokenizer
        if request.messages is not None:
            tools = tool_definitions(request.tools) if request.tools else None
            prompt = await self._builder(request).build(request.messages, tools)
            record_prompt(self._metrics, prompt, started)
            pads = self._engine.placeholder_ids
            tokens = list(expanded_ids(prompt, pads["image"], pads["video"]))
        else:
            add_special = request.add_special_tokens is not False  # vLLM's default: True
            tokens = await self._in_pool(self._encode, request.prompt, add_special)
            record_text_prompt(self._metrics, len(tokens), started)
        strings = None
        if request.return_token_strs:
            strings = await self._in_pool(tokenizer.convert_ids_to_tokens, tokens)
        return TokenizeResponse(
            count=len(tokens),
            max_model_len=self._engine.max_model_len,
            tokens=tokens,
            token_strs=strings,
        )

    def _encode(self, text: str, add_special_tokens: bool) -> list[int]:
        tokens = self._engine.tokenizer.encode(text, add_special_tokens=add_special_tokens)
        if len(text) > TRIM_AFTER_CHARS:
            release_memory()
        return tokens

    async def detokenize(self, request: DetokenizeRequest) -> DetokenizeResponse:
        self._models.resolve(request.model)
        check_token_ids(request.tokens, self._engine.vocab_size, "tokens")
        text = await self._in_pool(self._engine.tokenizer.decode, request.tokens)
        return DetokenizeResponse(prompt=text)
