"""Chat completions: request -> the shared runner -> response or SSE chunks, tool calls read
from the answer when the request offers tools."""

from __future__ import annotations

from collections.abc import AsyncIterator

from lingshu_server.engine.interface import EngineStep, TokenLogprob
from lingshu_server.protocol.chat import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    FunctionCall,
    FunctionCallDelta,
    ToolCall,
    ToolCallDelta,
)
from lingshu_server.protocol.chat import TokenLogprob as WireTokenLogprob
from lingshu_server.protocol.chat import TopLogprob as WireTopLogprob
from lingshu_server.protocol.common import Usage, now
from lingshu_server.services.request_records import note_usage
from lingshu_server.services.runner import GenerationRunner, StartedRun, collect
from lingshu_server.services.streaming import FLUSH, guarded_events, sse
from lingshu_server.services.tool_calls import (
    ArgumentsDelta,
    CallFinished,
    CallStarted,
    ContentDelta,
    ToolCallReader,
    ToolEvent,
    read_answer,
)


def wire_logprobs(tokens: list[TokenLogprob]) -> list[WireTokenLogprob]:
    """Each token's `bytes` are its own (see engine/token_bytes.py), not its text's: a token
    holding part of a character has text U+FFFD but bytes that join with its neighbours'."""
    return [
        WireTokenLogprob(
            token=t.token,
            logprob=t.logprob,
            bytes=t.bytes,
            top_logprobs=[
                WireTopLogprob(token=top.token, logprob=top.logprob, bytes=top.bytes)
                for top in t.top
            ],
        )
        for t in tokens
    ]


def finish_with_calls(finish_reason: str, called: bool) -> str:
    """OpenAI's finish_reason for an answer that ended by itself with tool calls."""
    return "tool_calls" if called and finish_reason == "stop" else finish_reason


class ChatService:
    def __init__(self, runner: GenerationRunner):
        self.runner = runner  # the core, shared with the other generating surfaces

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletion:
        started = await self.runner.start(request)
        outputs = await collect(started, request.num_choices)
        prompt_tokens = started.first.prompt_tokens
        completion_tokens = sum(len(output.token_ids) for output in outputs)
        choices = []
        for i, output in enumerate(outputs):
            message, finish_reason = _message("".join(output.text), output.finish_reason, started)
            choices.append(
                Choice(
                    index=i,
                    message=message,
                    logprobs=ChoiceLogprobs(content=wire_logprobs(output.logprobs))
                    if request.logprobs
                    else None,
                    finish_reason=finish_reason,
                    token_ids=output.token_ids if request.return_token_ids else None,
                )
            )
        prompt_ids = started.first.prompt_token_ids
        return ChatCompletion(
            id=started.run.request_id,
            created=now(),
            model=started.model,
            system_fingerprint=started.fingerprint,
            choices=choices,
            prompt_token_ids=list(prompt_ids) if request.return_token_ids else None,
            usage=Usage.of(prompt_tokens, completion_tokens, started.first.cached_tokens),
        )

    async def stream(self, request: ChatCompletionRequest) -> AsyncIterator[str]:
        """Validate and start; the returned iterator yields SSE events exactly as OpenAI does."""
        started = await self.runner.start(request)
        return guarded_events(self._events(request, started), started.run)

    async def _events(
        self, request: ChatCompletionRequest, started: StartedRun
    ) -> AsyncIterator[str]:
        run, first = started.run, started.first
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        # OpenAI sends "usage": null on every chunk when usage was asked for, else no usage key.
        exclude = None if include_usage else {"usage"}
        created = now()

        ids = request.return_token_ids
        readers = (
            [ToolCallReader(started.tools) for _ in range(request.num_choices)]
            if started.reads_calls and started.tools is not None
            else None
        )

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
                id=run.request_id,
                created=created,
                model=started.model,
                system_fingerprint=started.fingerprint,
                choices=[choice],
                prompt_token_ids=prompt_token_ids,
            )
            return sse(body.model_dump_json(exclude=exclude))

        def finish_chunks(index: int, finish_reason: str) -> list[str]:
            if readers is None:
                return [chunk(index, Delta(), finish_reason)]
            reader = readers[index]
            deltas = _deltas(reader.finish())
            finish_reason = finish_with_calls(finish_reason, bool(reader.calls))
            return [chunk(index, delta) for delta in deltas] + [
                chunk(index, Delta(), finish_reason)
            ]

        completion_tokens = 0
        prompt_tokens = first.prompt_tokens
        unfinished = set(range(request.num_choices))
        prompt_ids = list(first.prompt_token_ids) if ids else None
        for index in range(request.num_choices):
            yield chunk(index, Delta(role="assistant", content=""), prompt_token_ids=prompt_ids)
            prompt_ids = None  # once, on the first chunk
        step: EngineStep | None = first
        while step is not None:
            for delta in step.choices:
                completion_tokens += len(delta.token_ids)
                logprobs = delta.logprobs if request.logprobs else None
                token_ids = delta.token_ids if ids else None
                if readers is None:
                    has_output = delta.text or logprobs or token_ids
                    deltas = [Delta(content=delta.text)] if has_output else []
                else:
                    deltas = _deltas(readers[delta.index].feed(delta.text))
                if not deltas and (logprobs or token_ids):
                    deltas = [Delta()]  # the step's logprobs or ids still go out
                for j, wire in enumerate(deltas):
                    first_of_step = j == 0
                    yield chunk(
                        delta.index,
                        wire,
                        None,
                        logprobs if first_of_step else None,
                        token_ids if first_of_step else None,
                    )
                if delta.finish_reason is not None:
                    unfinished.discard(delta.index)
                    for event in finish_chunks(delta.index, delta.finish_reason):
                        yield event
            yield FLUSH  # this step's events go out together, now
            step = await run.next()
        for index in sorted(unfinished):  # cut off by the deadline
            for event in finish_chunks(index, "length"):
                yield event
        note_usage(completion_tokens)
        if include_usage:
            usage = Usage.of(prompt_tokens, completion_tokens, first.cached_tokens)
            body = ChatCompletionChunk(
                id=run.request_id,
                created=created,
                model=started.model,
                system_fingerprint=started.fingerprint,
                choices=[],
                usage=usage,
            )
            yield sse(body.model_dump_json())


def _message(text: str, finish_reason: str, started: StartedRun) -> tuple[AssistantMessage, str]:
    if not started.reads_calls or started.tools is None:
        return AssistantMessage(content=text), finish_reason
    answer = read_answer(text, started.tools)
    calls = [
        ToolCall(id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments))
        for call in answer.calls
    ]
    return (
        AssistantMessage(content=answer.content, tool_calls=calls or None),
        finish_with_calls(finish_reason, bool(calls)),
    )


def _deltas(events: list[ToolEvent]) -> list[Delta]:
    """A tool reader's events as OpenAI streams them: text, a call's name, argument fragments
    (the end of a call has no chunk of its own)."""
    return [_delta(event) for event in events if not isinstance(event, CallFinished)]


def _delta(event: ContentDelta | CallStarted | ArgumentsDelta) -> Delta:
    if isinstance(event, ContentDelta):
        return Delta(content=event.text)
    if isinstance(event, CallStarted):
        call = ToolCallDelta(
            index=event.index,
            id=event.id,
            type="function",
            function=FunctionCallDelta(name=event.name, arguments=""),
        )
        return Delta(tool_calls=[call])
    assert isinstance(event, ArgumentsDelta)
    return Delta(
        tool_calls=[
            ToolCallDelta(index=event.index, function=FunctionCallDelta(arguments=event.text))
        ]
    )
