"""A generating request's sampling fields -> the engine's SamplingOptions, for every surface."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lingshu_server.core import request_context
from lingshu_server.core.errors import InvalidRequestError
from lingshu_server.engine.interface import SamplingOptions
from lingshu_server.protocol.common import SamplingRequest


def sampling_options(
    request: SamplingRequest,
    max_tokens_cap: int,
    *,
    logprobs: int | None = None,
    prompt_logprobs: int | None = None,
    grammar: str | None = None,
    default_max_tokens: int | None = None,
) -> SamplingOptions:
    """The rules that need the server's settings: `max_tokens` within --max-tokens-cap and
    `min_tokens` within `max_tokens`. A request without `max_tokens` gets
    `default_max_tokens`, within the cap (no default: the cap)."""
    requested = request.requested_max_tokens
    param = request.max_tokens_param
    if requested is not None and requested > max_tokens_cap:
        raise InvalidRequestError(
            f"{param} is too large: {requested}. This server allows at most "
            f"{max_tokens_cap} completion tokens.",
            param=param,
        )
    max_tokens = requested or min(default_max_tokens or max_tokens_cap, max_tokens_cap)
    if request.min_tokens > max_tokens:
        given = f"{param} ({requested})" if requested else f"the default max_tokens ({max_tokens})"
        raise InvalidRequestError(
            f"min_tokens ({request.min_tokens}) must not exceed {given}",
            param="min_tokens",
        )
    return SamplingOptions(
        max_tokens=max_tokens,
        n=request.num_choices,
        temperature=request.temperature,
        top_p=request.top_p,
        top_k=request.top_k,
        min_p=request.min_p,
        seed=request.seed,
        stop=request.stop_sequences,
        presence_penalty=request.presence_penalty_value,
        frequency_penalty=request.frequency_penalty_value,
        repetition_penalty=request.repetition_penalty,
        ignore_eos=request.ignore_eos,
        min_tokens=request.min_tokens,
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        grammar=grammar,
        priority=_priority(),
    )


def _priority() -> int:
    """The request's scheduling priority: a person's 0, a batch line's --batch-priority."""
    ctx = request_context.get()
    return ctx.priority if ctx is not None else 0


@dataclass(frozen=True)
class EffectiveSampling:
    """The sampling values a request ran with: its own, else the engine's defaults."""

    temperature: float
    top_p: float
    presence_penalty: float
    frequency_penalty: float

    @classmethod
    def of(cls, options: SamplingOptions, defaults: Mapping[str, float]) -> EffectiveSampling:
        return cls(
            temperature=_given_or(options.temperature, defaults, "temperature", 1.0),
            top_p=_given_or(options.top_p, defaults, "top_p", 1.0),
            presence_penalty=options.presence_penalty,
            frequency_penalty=options.frequency_penalty,
        )


def _given_or(value: float | None, defaults: Mapping[str, float], name: str, last: float) -> float:
    return value if value is not None else defaults.get(name, last)
