"""The core every generating surface shares: a request's model, tools, grammar and sampling
options checked, its prompt built (images and all), an admission slot taken, and the engine run
started, so that every error before the first token is a 4xx or 5xx JSON answer.

Chat completions (serving) and responses (responses) each read the run and speak their own
wire format; neither builds prompts or talks to the engine itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
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
from lingshu_server.api.protocol import ChatCompletionRequest, completion_id
from lingshu_server.engine.vllm_engine import Engine, EngineStep, SamplingOptions, TokenLogprob
from lingshu_server.metrics import Metrics
from lingshu_server.services.chat import ChatPrompt, ChatPromptBuilder
from lingshu_server.services.generation import EngineRun, deadline_after, elapsed_since
from lingshu_server.services.input_records import record_inputs
from lingshu_server.services.structured_output import StructuredOutput
from lingshu_server.services.tool_calls import ToolGrammars, ToolUse

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


@dataclass
class StartedRun:
    """A run whose first engine step has arrived."""

    model: str
    run: EngineRun
    first: EngineStep
    tools: ToolUse | None  # the request's tools, when it offers any

    @property
    def reads_calls(self) -> bool:
        """Whether the answer is read for tool calls (tools offered, calls allowed)."""
        return self.tools is not None and self.tools.calls_allowed


@dataclass
class ChoiceOutput:
    """One choice's whole answer."""

    text: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = "length"  # until the engine says otherwise (a deadline cut-off)


async def collect(started: StartedRun, n: int) -> list[ChoiceOutput]:
    """Every step of a run to the end (closing it), per choice; counts the usage."""
    outputs = [ChoiceOutput() for _ in range(n)]
    step: EngineStep | None = started.first
    try:
        while step is not None:
            for delta in step.choices:
                output = outputs[delta.index]
                output.text.append(delta.text)
                output.token_ids.extend(delta.token_ids)
                if delta.logprobs:
                    output.logprobs.extend(delta.logprobs)
                output.finish_reason = delta.finish_reason or output.finish_reason
            step = await started.run.next()
    except asyncio.CancelledError:
        note_disconnect()
        raise
    finally:
        await started.run.close()
    note_usage(sum(len(output.token_ids) for output in outputs))
    return outputs


class GenerationRunner:
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
        self._grammars = ToolGrammars(structured)
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

    async def start(self, request: ChatCompletionRequest) -> StartedRun:
        """Validate everything and wait for the engine's first step, so errors stay 4xx JSON."""
        model = self.resolve_model(request.model)
        tools = ToolUse.from_chat(request)
        grammar = await self._grammars.grammar(tools, request.response_format)
        options = sampling_options(request, self._max_tokens_cap, grammar)
        deadline = deadline_after(self._timeout(request))
        await self._admission.acquire()
        run: EngineRun | None = None
        try:
            started = time.perf_counter()
            prompt = await self._prompts.build(
                request.messages, tools.definitions if tools else None
            )
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
        return StartedRun(model, run, first, tools)


# JSON leaves these unescaped, but Python's str.splitlines (which some SSE clients, httpx's
# iter_lines among them, use to split events into lines) breaks lines at them: escaped, an event
# is one line for every client. (Control characters below U+0020 are escaped by JSON already.)
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def sse(data: str, event: str | None = None) -> str:
    """One server-sent event; `event` names its type (the Responses API's streams do)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data.translate(_LINE_BREAKS)}\n\n"


def note_usage(completion_tokens: int) -> None:
    ctx = request_context.get()
    if ctx is not None:
        ctx.completion_tokens = completion_tokens


def note_disconnect() -> None:
    ctx = request_context.get()
    if ctx is not None:
        ctx.client_disconnected = True


def note_stream_error(exc: APIError) -> None:
    """A stream that fails after its 200 is logged and counted with the error's status."""
    ctx = request_context.get()
    if ctx is not None:
        ctx.status = int(exc.status)
        ctx.stream_error = exc.code or exc.type


def unexpected(exc: Exception) -> InternalServerError:
    """A bug met mid-stream: logged by type and stack (its message may quote the request), and
    told to the client as a bare internal error."""
    logger.error("stream failed: %s\n%s", type(exc).__name__, stack_without_message(exc))
    return InternalServerError("internal server error")
