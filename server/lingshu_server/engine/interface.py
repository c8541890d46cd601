"""What services need of an engine, free of any vLLM type.

`VllmEngine` (engine/vllm_engine.py) is the real one; tests of the HTTP edge use a fake with the
same shape (tests/utils/fake_engine.py). Services import only this module.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from lingshu_server.core.image_budget import PixelBudget
from lingshu_server.core.settings import Settings
from lingshu_server.engine.lora import LoraPlan


@dataclass
class SamplingOptions:
    """What a request asks of generation, free of any vLLM type."""

    max_tokens: int
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    logprobs: int | None = None  # number of top alternatives; None = no logprobs
    prompt_logprobs: int | None = None  # the same for each prompt token; None = none
    grammar: str | None = None  # EBNF the output must follow (structured output)
    priority: int = 0  # the engine's scheduling priority: lower runs first (batch lines: higher)


@dataclass
class Candidate:
    """A token at one position with its logprob."""

    token: str  # its text, as the detokenizer shows it alone
    logprob: float
    bytes: list[int]  # its own bytes (part of a character's, for a character split over tokens)


@dataclass
class TokenLogprob(Candidate):
    """The chosen token, and the most likely ones at its position."""

    top: list[Candidate]


@dataclass(kw_only=True)
class ChoiceDelta:
    index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None
    finish_reason: str | None


@dataclass(kw_only=True)
class EngineStep:
    """New output since the previous step, for each choice that advanced."""

    prompt_tokens: int
    choices: list[ChoiceDelta]
    finished: bool
    prompt_token_ids: Sequence[int] = ()  # as the engine saw them: image tokens expanded
    # with SamplingOptions.prompt_logprobs, on the first step: one per prompt token (the
    # first token has none)
    prompt_logprobs: list[TokenLogprob | None] | None = None
    # prompt tokens found in the engine's prefix cache (an earlier turn's, say)
    cached_tokens: int = 0


class Engine(Protocol):
    """An engine started once for the app's lifetime."""

    max_model_len: int
    # the checkpoint's tokenizer (transformers' interface: encode, decode, chat template)
    tokenizer: Any
    # token ids a prompt may hold: the tokenizer's and the model's (they differ for Qwen)
    vocab_size: int
    # the single token a prompt holds per image ("image") or video ("video")
    placeholder_ids: Mapping[str, int]
    # the most visual tokens one image or video may have
    max_tokens_per_visual_item: int
    # what decides its answers as the engine resolved it (its version, the dtype, the
    # quantization, the engine arguments that change outputs): part of `system_fingerprint`
    configuration: Mapping[str, Any]
    # the sampling values a request that names none gets (the checkpoint's
    # generation_config.json, else the engine's own defaults)
    sampling_defaults: Mapping[str, float]

    async def load_adapters(self) -> None: ...

    # an async generator: closing it aborts the engine request
    def generate(
        self,
        prompt_token_ids: list[int],
        images: Sequence[np.ndarray],  # RGB, H x W x 3 uint8, at the size the model sees
        options: SamplingOptions,
        request_id: str,
        videos: Sequence[tuple[np.ndarray, dict[str, Any]]] = (),
        adapter: str | None = None,
        image_ids: Sequence[str | None] = (),
    ) -> AsyncGenerator[EngineStep, None]: ...

    async def abort(self, request_id: str) -> None: ...

    async def is_healthy(self) -> bool: ...

    def shutdown(self) -> None: ...


class EngineFactory(Protocol):
    """Builds the engine (blocking: it loads weights) and reads the engine's own metrics."""

    def __call__(self, settings: Settings, image_budget: PixelBudget, lora: LoraPlan) -> Engine: ...

    def metrics_exposition(self) -> bytes: ...
