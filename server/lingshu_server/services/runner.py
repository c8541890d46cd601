"""The core every generating surface shares: a request's model, tools, grammar and sampling
options checked, its prompt built (images and all), an admission slot taken, and the engine run
started, so that every error before the first token is a 4xx or 5xx JSON answer.

Chat completions (serving) and responses (responses) each read the run and speak their own
wire format; neither builds prompts or talks to the engine itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from lingshu_server.core.metrics import Metrics
from lingshu_server.engine.interface import Engine, EngineStep, TokenLogprob
from lingshu_server.protocol.chat import ChatCompletionRequest
from lingshu_server.protocol.common import completion_id
from lingshu_server.services.admission import AdmissionController
from lingshu_server.services.chat_prompt import ChatPrompt, ChatPromptBuilder
from lingshu_server.services.generation import (
    EngineRun,
    deadline_after,
    start_run,
    step_tokens,
    timeout_of,
)
from lingshu_server.services.models import ServedModels
from lingshu_server.services.request_records import (
    note_cached,
    note_disconnect,
    note_usage,
    record_prompt,
)
from lingshu_server.services.sampling import EffectiveSampling, sampling_options
from lingshu_server.services.structured_output import StructuredOutput
from lingshu_server.services.tool_calls import ToolGrammars, ToolUse


@dataclass(kw_only=True)
class StartedRun:
    """A run whose first engine step has arrived."""

    model: str
    run: EngineRun[EngineStep]
    first: EngineStep
    tools: ToolUse | None  # the request's tools, when it offers any
    fingerprint: str  # the answer's system_fingerprint
    sampling: EffectiveSampling

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
        *,
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
        self._grammars = ToolGrammars(structured)
        self._request_timeout = request_timeout

    async def start(self, request: ChatCompletionRequest) -> StartedRun:
        """Validate everything and wait for the engine's first step, so errors stay 4xx JSON."""
        model = self._models.resolve(request.model)
        tools = ToolUse.from_chat(request)
        grammar = await self._grammars.grammar(tools, request.response_format)
        options = sampling_options(
            request, self._max_tokens_cap, logprobs=request.num_logprobs, grammar=grammar
        )
        deadline = deadline_after(timeout_of(request.request_timeout, self._request_timeout))
        request_id = completion_id()
        prompt: ChatPrompt | None = None

        async def prepare() -> AsyncGenerator[EngineStep, None]:
            nonlocal prompt
            started = time.perf_counter()
            prompt = await self._prompts.build(
                request.messages, tools.definitions if tools else None
            )
            record_prompt(self._metrics, prompt, started)
            return self._engine.generate(
                prompt.token_ids,
                [image.pixels for image in prompt.images],
                options,
                request_id,
                [(video.frames, video.metadata) for video in prompt.videos],
                adapter=model.adapter,
                image_ids=[image.pixels_id for image in prompt.images],
            )

        run, first = await start_run(
            self._admission, request_id, deadline, prepare, tokens_of=step_tokens
        )
        if first is None:  # the deadline passed before the first token
            assert prompt is not None
            first = EngineStep(prompt_tokens=prompt.num_tokens, choices=[], finished=True)
        note_cached(first.cached_tokens)
        return StartedRun(
            model=model.name,
            run=run,
            first=first,
            tools=tools,
            fingerprint=model.fingerprint,
            sampling=EffectiveSampling.of(options, self._engine.sampling_defaults),
        )
