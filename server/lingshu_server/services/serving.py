"""Chat completions: request -> prompt and sampling options -> engine -> response or SSE chunks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from lingshu_server.api.limits import AdmissionController
from lingshu_server.api.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    Usage,
    completion_id,
    now,
)
from lingshu_server.api.protocol import TokenLogprob as WireTokenLogprob
from lingshu_server.api.protocol import TopLogprob as WireTopLogprob
from lingshu_server.engine.vllm_engine import Engine, EngineStep, TokenLogprob
from lingshu_server.metrics import Metrics
from lingshu_server.services.chat import ChatPrompt, ChatPromptBuilder
from lingshu_server.services.generation import EngineRun, deadline_after, start_run, timeout_of
from lingshu_server.services.models import ServedModels
from lingshu_server.services.request_records import note_disconnect, note_usage, record_prompt
from lingshu_server.services.sampling import sampling_options
from lingshu_server.services.streaming import guarded_events, sse
from lingshu_server.services.structured_output import StructuredOutput


def wire_logprobs(tokens: list[TokenLogprob]) -> list[WireTokenLogprob]:
    return [
        WireTokenLogprob(
            token=t.token,
            logprob=t.logprob,
            bytes=list(t.token.encode("utf-8")),
            top_logprobs=[
                WireTopLogprob(token=tok, logprob=lp, bytes=list(tok.encode("utf-8")))
                for tok, lp in t.top
            ],
        )
        for t in tokens
    ]


@dataclass
class _ChoiceState:
    text: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None


class ChatService:
    def __init__(
        self,
        engine: Engine,
        prompts: ChatPromptBuilder,
        models: ServedModels,
        max_tokens_cap: int,
        admission: AdmissionController,
        metrics: Metrics,
        structured: StructuredOutput,
        request_timeout: float | None = None,
    ):
        self._engine = engine
        self._prompts = prompts
        self._models = models
        self._max_tokens_cap = max_tokens_cap
        self._admission = admission
        self._metrics = metrics
        self._structured = structured
        self._request_timeout = request_timeout

    async def _start(self, request: ChatCompletionRequest) -> tuple[str, EngineRun, EngineStep]:
        """Validate everything and wait for the engine's first step, so errors stay 4xx JSON."""
        model = self._models.resolve(request.model)
        grammar = await self._structured.grammar(request.response_format)
        options = sampling_options(
            request, self._max_tokens_cap, logprobs=request.num_logprobs, grammar=grammar
        )
        deadline = deadline_after(timeout_of(request.request_timeout, self._request_timeout))
        request_id = completion_id()
        prompt: ChatPrompt | None = None

        async def prepare() -> AsyncIterator[EngineStep]:
            nonlocal prompt
            started = time.perf_counter()
            prompt = await self._prompts.build(request.messages)
            record_prompt(self._metrics, prompt, started)
            return self._engine.generate(
                prompt.token_ids,
                [img.image for img in prompt.images],
                options,
                request_id,
                [(video.frames, video.metadata) for video in prompt.videos],
                adapter=model.adapter,
                image_ids=[image.pixels_id for image in prompt.images],
            )

        run, first = await start_run(self._admission, request_id, deadline, prepare)
        if first is None:  # the deadline passed before the first token
            first = EngineStep(prompt_tokens=prompt.num_tokens, choices=[], finished=True)
        return model.name, run, first

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletion:
        model, run, first = await self._start(request)
        states = [_ChoiceState() for _ in range(request.n)]
        prompt_tokens = first.prompt_tokens
        step: EngineStep | None = first
        try:
            while step is not None:
                for delta in step.choices:
                    state = states[delta.index]
                    state.text.append(delta.text)
                    state.token_ids.extend(delta.token_ids)
                    if delta.logprobs:
                        state.logprobs.extend(delta.logprobs)
                    state.finish_reason = delta.finish_reason or state.finish_reason
                step = await run.next()
        except asyncio.CancelledError:
            note_disconnect()
            raise
        finally:
            await run.close()
        for state in states:
            state.finish_reason = state.finish_reason or "length"  # cut off by the deadline
        completion_tokens = sum(len(s.token_ids) for s in states)
        note_usage(completion_tokens)
        return ChatCompletion(
            id=run.request_id,
            created=now(),
            model=model,
            choices=[
                Choice(
                    index=i,
                    message=AssistantMessage(content="".join(s.text)),
                    logprobs=ChoiceLogprobs(content=wire_logprobs(s.logprobs))
                    if request.logprobs
                    else None,
                    finish_reason=s.finish_reason,
                    token_ids=s.token_ids if request.return_token_ids else None,
                )
                for i, s in enumerate(states)
            ],
            prompt_token_ids=list(first.prompt_token_ids) if request.return_token_ids else None,
            usage=Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
        )

    async def stream(self, request: ChatCompletionRequest) -> AsyncIterator[str]:
        """Validate and start; the returned iterator yields SSE events exactly as OpenAI does."""
        model, run, first = await self._start(request)
        return guarded_events(self._events(request, model, run, first), run)

    async def _events(
        self,
        request: ChatCompletionRequest,
        model: str,
        run: EngineRun,
        first: EngineStep,
    ) -> AsyncIterator[str]:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        # OpenAI sends "usage": null on every chunk when usage was asked for, else no usage key.
        exclude = None if include_usage else {"usage"}
        header = {"id": run.request_id, "created": now(), "model": model}

        ids = request.return_token_ids

        def chunk(
            index: int,
            delta: Delta,
            finish: str | None = None,
            logprobs: list[TokenLogprob] | None = None,
            token_ids: list[int] | None = None,
            prompt_token_ids: list[int] | None = None,
        ) -> str:
            choice = ChunkChoice(
                index=index,
                delta=delta,
                logprobs=ChoiceLogprobs(content=wire_logprobs(logprobs))
                if logprobs is not None
                else None,
                finish_reason=finish,
                token_ids=token_ids,
            )
            body = ChatCompletionChunk(
                **header, choices=[choice], prompt_token_ids=prompt_token_ids
            )
            return sse(body.model_dump_json(exclude=exclude))

        completion_tokens = 0
        prompt_tokens = first.prompt_tokens
        unfinished = set(range(request.n))
        prompt_ids = list(first.prompt_token_ids) if ids else None
        for index in range(request.n):
            yield chunk(index, Delta(role="assistant", content=""), prompt_token_ids=prompt_ids)
            prompt_ids = None  # once, on the first chunk
        step: EngineStep | None = first
        while step is not None:
            for delta in step.choices:
                completion_tokens += len(delta.token_ids)
                if delta.text or delta.logprobs or (ids and delta.token_ids):
                    logprobs = delta.logprobs if request.logprobs else None
                    token_ids = delta.token_ids if ids else None
                    yield chunk(delta.index, Delta(content=delta.text), None, logprobs, token_ids)
                if delta.finish_reason is not None:
                    unfinished.discard(delta.index)
                    yield chunk(delta.index, Delta(), delta.finish_reason)
            step = await run.next()
        for index in sorted(unfinished):  # cut off by the deadline
            yield chunk(index, Delta(), "length")
        note_usage(completion_tokens)
        if include_usage:
            usage = Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            )
            yield sse(ChatCompletionChunk(**header, choices=[], usage=usage).model_dump_json())
