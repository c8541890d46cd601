"""Chat completions: request -> prompt and sampling options -> engine -> response or SSE chunks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from lingshu_server.api import request_context
from lingshu_server.api.errors import (
    APIError,
    InternalServerError,
    InvalidRequestError,
    ModelNotFoundError,
    stack_without_message,
)
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
from lingshu_server.engine.vllm_engine import Engine, EngineStep, SamplingOptions, TokenLogprob
from lingshu_server.metrics import Metrics
from lingshu_server.services.chat import ChatPrompt, ChatPromptBuilder
from lingshu_server.services.generation import EngineRun, deadline_after, elapsed_since
from lingshu_server.services.input_records import record_inputs
from lingshu_server.services.structured_output import StructuredOutput

logger = logging.getLogger(__name__)


def sampling_options(
    request: ChatCompletionRequest, max_tokens_cap: int, grammar: str | None = None
) -> SamplingOptions:
    requested = request.requested_max_tokens
    if requested is not None and requested > max_tokens_cap:
        param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        raise InvalidRequestError(
            f"{param} is too large: {requested}. This server allows at most "
            f"{max_tokens_cap} completion tokens.",
            param=param,
        )
    if request.min_tokens > (requested or max_tokens_cap):
        raise InvalidRequestError(
            f"min_tokens ({request.min_tokens}) must not exceed max_tokens, which is "
            f"{max_tokens_cap} when not given",
            param="min_tokens",
        )
    return SamplingOptions(
        max_tokens=requested or max_tokens_cap,
        n=request.n,
        temperature=request.temperature,
        top_p=request.top_p,
        top_k=request.top_k,
        min_p=request.min_p,
        seed=request.seed,
        stop=request.stop_sequences,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        repetition_penalty=request.repetition_penalty,
        ignore_eos=request.ignore_eos,
        min_tokens=request.min_tokens,
        logprobs=(request.top_logprobs or 0) if request.logprobs else None,
        grammar=grammar,
    )


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


# JSON leaves these unescaped, but Python's str.splitlines (which some SSE clients, httpx's
# iter_lines among them, use to split events into lines) breaks lines at them: escaped, an event
# is one line for every client. (Control characters below U+0020 are escaped by JSON already.)
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def sse(data: str) -> str:
    return f"data: {data.translate(_LINE_BREAKS)}\n\n"


class ChatService:
    def __init__(
        self,
        engine: Engine,
        prompts: ChatPromptBuilder,
        served_model_names: list[str],
        max_tokens_cap: int,
        admission: AdmissionController,
        metrics: Metrics,
        structured: StructuredOutput,
        request_timeout: float | None = None,
    ):
        self._engine = engine
        self._prompts = prompts
        self._names = served_model_names
        self._max_tokens_cap = max_tokens_cap
        self._admission = admission
        self._metrics = metrics
        self._structured = structured
        self._request_timeout = request_timeout

    def resolve_model(self, requested: str | None) -> str:
        if requested is None:
            return self._names[0]
        if requested not in self._names:
            raise ModelNotFoundError(
                f"The model `{requested}` does not exist. Available: {', '.join(self._names)}",
                param="model",
            )
        return requested

    def _timeout(self, request: ChatCompletionRequest) -> float | None:
        limits = [t for t in (request.request_timeout, self._request_timeout) if t is not None]
        return min(limits) if limits else None

    def _record_prompt(self, prompt: ChatPrompt, started: float) -> None:
        self._metrics.preprocess.observe(elapsed_since(started))
        ctx = request_context.get()
        if ctx is not None:
            ctx.prompt_tokens = prompt.num_tokens
        record_inputs(self._metrics, prompt.images, prompt.videos)

    async def _start(self, request: ChatCompletionRequest) -> tuple[str, EngineRun, EngineStep]:
        """Validate everything and wait for the engine's first step, so errors stay 4xx JSON."""
        model = self.resolve_model(request.model)
        grammar = await self._structured.grammar(request.response_format)
        options = sampling_options(request, self._max_tokens_cap, grammar)
        deadline = deadline_after(self._timeout(request))
        await self._admission.acquire()
        run: EngineRun | None = None
        try:
            started = time.perf_counter()
            prompt = await self._prompts.build(request.messages)
            self._record_prompt(prompt, started)
            request_id = completion_id()
            steps = self._engine.generate(
                prompt.token_ids,
                [img.image for img in prompt.images],
                options,
                request_id,
                [(video.frames, video.metadata) for video in prompt.videos],
            )
            run = EngineRun(request_id, steps, deadline, self._admission.release)
            first = await run.next()
        except BaseException:
            if run is not None:
                await run.close()
            else:
                self._admission.release()
            raise
        if first is None:  # the deadline passed before the first token
            first = EngineStep(prompt_tokens=prompt.num_tokens, choices=[], finished=True)
        return model, run, first

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
            _note_disconnect()
            raise
        finally:
            await run.close()
        for state in states:
            state.finish_reason = state.finish_reason or "length"  # cut off by the deadline
        completion_tokens = sum(len(s.token_ids) for s in states)
        _note_usage(completion_tokens)
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
        return self._events(request, model, run, first)

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
        try:
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
                        yield chunk(
                            delta.index, Delta(content=delta.text), None, logprobs, token_ids
                        )
                    if delta.finish_reason is not None:
                        unfinished.discard(delta.index)
                        yield chunk(delta.index, Delta(), delta.finish_reason)
                step = await run.next()
            for index in sorted(unfinished):  # cut off by the deadline
                yield chunk(index, Delta(), "length")
            _note_usage(completion_tokens)
            if include_usage:
                usage = Usage(
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    total_tokens=prompt_tokens + completion_tokens,
                )
                yield sse(ChatCompletionChunk(**header, choices=[], usage=usage).model_dump_json())
        except APIError as exc:
            _note_stream_error(exc)
            yield sse(exc.body().model_dump_json())
        except (asyncio.CancelledError, GeneratorExit):
            _note_disconnect()
            raise
        except Exception as exc:  # a bug: tell the client, log the type only
            logger.error("stream failed: %s\n%s", type(exc).__name__, stack_without_message(exc))
            error = InternalServerError("internal server error")
            _note_stream_error(error)
            yield sse(error.body().model_dump_json())
        finally:
            await run.close()
        yield sse("[DONE]")


def _note_usage(completion_tokens: int) -> None:
    ctx = request_context.get()
    if ctx is not None:
        ctx.completion_tokens = completion_tokens


def _note_disconnect() -> None:
    ctx = request_context.get()
    if ctx is not None:
        ctx.client_disconnected = True


def _note_stream_error(exc: APIError) -> None:
    """A stream that fails after its 200 is logged and counted with the error's status."""
    ctx = request_context.get()
    if ctx is not None:
        ctx.status = int(exc.status)
        ctx.stream_error = exc.code or exc.type
