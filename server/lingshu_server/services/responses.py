"""Responses: a Responses request through the shared runner, answered as one response object
or as OpenAI's Responses stream.

A stream is `response.created`, `response.in_progress`, then for each output item
`response.output_item.added`, its content (`response.content_part.added`,
`response.output_text.delta`..., `response.output_text.done`, `response.content_part.done`; or
`response.function_call_arguments.delta`..., `response.function_call_arguments.done`),
`response.output_item.done`, and last `response.completed`, or `response.incomplete` when the
answer was cut off at max_output_tokens. A failure after the first event is an `error` event
followed by `response.failed`. Every event has its `sequence_number`, from 0.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from lingshu_server.core.errors import APIError, InvalidRequestError
from lingshu_server.engine.interface import EngineStep
from lingshu_server.protocol.common import now
from lingshu_server.protocol.responses import (
    ArgumentsDeltaEvent,
    ArgumentsDoneEvent,
    ContentPartEvent,
    ErrorEvent,
    ErrorPayload,
    FunctionCallOutput,
    IncompleteDetails,
    InputTokensDetails,
    OutputItem,
    OutputItemEvent,
    OutputMessage,
    OutputTextPart,
    ResponseConversation,
    ResponseError,
    ResponseEvent,
    ResponsesRequest,
    ResponsesResponse,
    ResponseUsage,
    TextDeltaEvent,
    TextDoneEvent,
    item_id,
    response_id,
)
from lingshu_server.services.request_records import (
    note_disconnect,
    note_stream_error,
    note_usage,
)
from lingshu_server.services.response_history import History, ResponseHistory
from lingshu_server.services.responses_input import to_chat
from lingshu_server.services.runner import GenerationRunner, StartedRun, collect
from lingshu_server.services.sampling import EffectiveSampling
from lingshu_server.services.streaming import FLUSH, by_step, sse, unexpected
from lingshu_server.services.tool_calls import (
    ArgumentsDelta,
    CallFinished,
    CallStarted,
    ContentDelta,
    ToolCallReader,
    ToolEvent,
    read_answer,
)

Status = Literal["in_progress", "completed", "incomplete", "failed"]


@dataclass(frozen=True, kw_only=True)
class Identity:
    """What every event of one response repeats."""

    id: str
    created_at: int
    model: str
    store: bool
    conversation_id: str | None
    fingerprint: str
    sampling: EffectiveSampling


class OutputBuilder:
    """Output items built from an answer's events, with the stream events announcing them."""

    def __init__(self) -> None:
        self.items: list[OutputItem] = []
        self._message: OutputMessage | None = None  # the message being written
        self._calls: dict[int, FunctionCallOutput] = {}  # by the reader's call index
        self._sequence = itertools.count()

    def number(self) -> int:
        return next(self._sequence)

    def apply(self, events: list[ToolEvent]) -> list[Any]:
        out: list[Any] = []
        for event in events:
            if isinstance(event, ContentDelta):
                message = self._open_message(out)
                message.content[0].text += event.text
                out.append(
                    TextDeltaEvent(
                        sequence_number=self.number(),
                        item_id=message.id,
                        output_index=self._index(message),
                        content_index=0,
                        delta=event.text,
                    )
                )
            elif isinstance(event, CallStarted):
                self._close_message("completed", out)
                call = FunctionCallOutput(
                    id=item_id("fc"),
                    call_id=event.id,
                    name=event.name,
                    arguments="",
                    status="in_progress",
                )
                self._calls[event.index] = call
                self._add(call, out)
            elif isinstance(event, ArgumentsDelta):
                call = self._calls[event.index]
                call.arguments += event.text
                out.append(
                    ArgumentsDeltaEvent(
                        sequence_number=self.number(),
                        item_id=call.id,
                        output_index=self._index(call),
                        delta=event.text,
                    )
                )
            else:
                assert isinstance(event, CallFinished)
                self._close_call(self._calls[event.index], "completed", out)
        return out

    def finish(self, incomplete: bool) -> list[Any]:
        """Close what is open; an answer with no output at all gets an empty message."""
        out: list[Any] = []
        status: Literal["completed", "incomplete"] = "incomplete" if incomplete else "completed"
        if not self.items:
            self._open_message(out)
        self._close_message(status, out)
        for call in self._calls.values():
            if call.status == "in_progress":  # cut off inside its arguments
                self._close_call(call, "incomplete", out)
        return out

    def _index(self, item: OutputItem) -> int:
        return next(i for i, known in enumerate(self.items) if known is item)

    def _add(self, item: OutputItem, out: list[Any]) -> None:
        self.items.append(item)
        out.append(
            OutputItemEvent(
                type="response.output_item.added",
                sequence_number=self.number(),
                output_index=len(self.items) - 1,
                item=item.model_copy(deep=True),
            )
        )

    def _done(self, item: OutputItem, out: list[Any]) -> None:
        out.append(
            OutputItemEvent(
                type="response.output_item.done",
                sequence_number=self.number(),
                output_index=self._index(item),
                item=item.model_copy(deep=True),
            )
        )

    def _open_message(self, out: list[Any]) -> OutputMessage:
        if self._message is not None:
            return self._message
        message = OutputMessage(id=item_id("msg"), status="in_progress", content=[])
        self._message = message
        self._add(message, out)
        message.content.append(OutputTextPart(text=""))
        out.append(self._part_event("response.content_part.added", message))
        return message

    def _close_message(self, status: Literal["completed", "incomplete"], out: list[Any]) -> None:
        message = self._message
        if message is None:
            return
        self._message = None
        out.append(
            TextDoneEvent(
                sequence_number=self.number(),
                item_id=message.id,
                output_index=self._index(message),
                content_index=0,
                text=message.content[0].text,
            )
        )
        out.append(self._part_event("response.content_part.done", message))
        message.status = status
        self._done(message, out)

    def _part_event(
        self,
        kind: Literal["response.content_part.added", "response.content_part.done"],
        message: OutputMessage,
    ) -> ContentPartEvent:
        return ContentPartEvent(
            type=kind,
            sequence_number=self.number(),
            item_id=message.id,
            output_index=self._index(message),
            content_index=0,
            part=message.content[0].model_copy(),
        )

    def _close_call(
        self,
        call: FunctionCallOutput,
        status: Literal["completed", "incomplete"],
        out: list[Any],
    ) -> None:
        out.append(
            ArgumentsDoneEvent(
                sequence_number=self.number(),
                item_id=call.id,
                output_index=self._index(call),
                name=call.name,
                arguments=call.arguments,
            )
        )
        call.status = status
        self._done(call, out)


def answer_events(text: str, started: StartedRun) -> list[ToolEvent]:
    """A whole answer as the events a stream of it would have given."""
    if not started.reads_calls or started.tools is None:
        return [ContentDelta(text)] if text else []
    answer = read_answer(text, started.tools)
    events: list[ToolEvent] = [ContentDelta(answer.content)] if answer.content else []
    for i, call in enumerate(answer.calls):
        events += [CallStarted(i, call.id, call.name), ArgumentsDelta(i, call.arguments)]
        events.append(CallFinished(i))
    return events


class ResponsesService:
    """`history` keeps and replays stored responses and conversations; `store_default` is
    what an absent `store` means."""

    def __init__(
        self,
        runner: GenerationRunner,
        *,
        history: ResponseHistory | None = None,
        store_default: bool = False,
    ):
        self._runner = runner
        self._history = history
        self._store_default = store_default

    def _stores(self, request: ResponsesRequest) -> bool:
        return self._store_default if request.store is None else request.store

    async def _start(self, request: ResponsesRequest) -> tuple[StartedRun, Identity]:
        history = History()
        if request.previous_response_id or request.conversation or self._stores(request):
            if self._history is None:
                raise InvalidRequestError(
                    "this server keeps no responses: send store: false and the whole "
                    "conversation in input",
                    param="store" if self._stores(request) else "previous_response_id",
                )
            history = await self._history.before(request)
        chat, names = to_chat(request, history.items, history.param or "")
        try:
            started = await self._runner.start(chat)
        except APIError as exc:
            raise names.renamed(exc) from None
        identity = Identity(
            id=response_id(),
            created_at=now(),
            model=started.model,
            store=self._stores(request),
            conversation_id=request.conversation_id,
            fingerprint=started.fingerprint,
            sampling=started.sampling,
        )
        return started, identity

    async def _keep(self, request: ResponsesRequest, response: ResponsesResponse) -> None:
        """Store the finished response and extend its conversation, before the client is told
        it finished: a response reported done is a response kept."""
        if self._history is not None and (response.store or request.conversation is not None):
            await self._history.after(request, response, store=response.store)

    async def create(self, request: ResponsesRequest) -> ResponsesResponse:
        started, identity = await self._start(request)
        (output,) = await collect(started, 1)
        incomplete = output.finish_reason != "stop"
        builder = OutputBuilder()
        builder.apply(answer_events("".join(output.text), started))
        builder.finish(incomplete)
        usage = _usage(started.first, len(output.token_ids))
        status: Status = "incomplete" if incomplete else "completed"
        response = _response(request, identity, status, builder.items, usage)
        await self._keep(request, response)
        return response

    async def stream(self, request: ResponsesRequest) -> AsyncIterator[str]:
        """Validate and start; the returned iterator yields the Responses stream's events."""
        started, identity = await self._start(request)
        return by_step(self._events(request, started, identity))

    async def _events(
        self, request: ResponsesRequest, started: StartedRun, identity: Identity
    ) -> AsyncIterator[str]:
        builder = OutputBuilder()
        run = started.run

        def event(kind: Any, status: Status, **fields: Any) -> str:
            response = _response(request, identity, status, builder.items, **fields)
            return _sse(
                ResponseEvent(type=kind, sequence_number=builder.number(), response=response)
            )

        reader = ToolCallReader(started.tools) if started.reads_calls and started.tools else None
        tokens = 0
        finish_reason = "length"  # the engine ends an answer itself, else the deadline cut it
        try:
            yield event("response.created", "in_progress")
            yield event("response.in_progress", "in_progress")
            step: EngineStep | None = started.first
            while step is not None:
                for delta in step.choices:
                    tokens += len(delta.token_ids)
                    finish_reason = delta.finish_reason or finish_reason
                    if reader is not None:
                        events = reader.feed(delta.text)
                    else:
                        events = [ContentDelta(delta.text)] if delta.text else []
                    for wire in builder.apply(events):
                        yield _sse(wire)
                yield FLUSH  # this step's events go out together, now
                step = await run.next()
            incomplete = finish_reason != "stop"
            closing = builder.apply(reader.finish()) if reader is not None else []
            for wire in closing + builder.finish(incomplete):
                yield _sse(wire)
            note_usage(tokens)
            usage = _usage(started.first, tokens)
            status: Status = "incomplete" if incomplete else "completed"
            final = _response(request, identity, status, builder.items, usage)
            yield FLUSH  # the closing events, before the response is stored
            await self._keep(request, final)
            kind: Literal["response.completed", "response.incomplete"] = (
                "response.incomplete" if incomplete else "response.completed"
            )
            yield _sse(ResponseEvent(type=kind, sequence_number=builder.number(), response=final))
        except (asyncio.CancelledError, GeneratorExit):
            note_disconnect()
            raise
        except Exception as exc:
            error = exc if isinstance(exc, APIError) else unexpected(exc)
            note_stream_error(error)
            payload = ErrorPayload(
                type=error.type, code=error.code, message=error.message, param=error.param
            )
            yield _sse(
                ErrorEvent(
                    sequence_number=builder.number(),
                    code=error.code,
                    message=error.message,
                    param=error.param,
                    error=payload,
                )
            )
            failure = ResponseError(code="server_error", message=error.message)
            yield event("response.failed", "failed", error=failure)
        finally:
            await run.close()


def _sse(event: Any) -> str:
    return sse(event.model_dump_json(), event.type)


def _usage(first: EngineStep, output_tokens: int) -> ResponseUsage:
    """`first`: the run's first step, which says how long the prompt was and how much of it
    the engine's prefix cache held."""
    return ResponseUsage(
        input_tokens=first.prompt_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=first.cached_tokens),
        output_tokens=output_tokens,
        total_tokens=first.prompt_tokens + output_tokens,
    )


def _response(
    request: ResponsesRequest,
    identity: Identity,
    status: Status,
    output: list[OutputItem],
    usage: ResponseUsage | None = None,
    error: ResponseError | None = None,
) -> ResponsesResponse:
    fmt = request.text.format if request.text else None
    choice = request.tool_choice or "auto"
    return ResponsesResponse(
        id=identity.id,
        created_at=identity.created_at,
        status=status,
        error=error,
        incomplete_details=IncompleteDetails(reason="max_output_tokens")
        if status == "incomplete"
        else None,
        instructions=request.instructions,
        max_output_tokens=request.max_output_tokens,
        model=identity.model,
        output=[item.model_copy(deep=True) for item in output] if status != "in_progress" else [],
        parallel_tool_calls=bool(request.parallel_tool_calls),
        previous_response_id=request.previous_response_id,
        conversation=ResponseConversation(id=identity.conversation_id)
        if identity.conversation_id
        else None,
        store=identity.store,
        temperature=identity.sampling.temperature,
        text={
            "format": fmt.model_dump(by_alias=True, exclude_none=True, exclude_unset=True)
            if fmt
            else {"type": "text"}
        },
        tool_choice=choice if isinstance(choice, str) else choice.model_dump(),
        tools=[tool.model_dump() for tool in request.tools or []],
        top_p=identity.sampling.top_p,
        usage=usage,
        user=request.user,
        metadata=request.metadata or {},
        completed_at=now() if status == "completed" else None,
        presence_penalty=identity.sampling.presence_penalty,
        frequency_penalty=identity.sampling.frequency_penalty,
        system_fingerprint=identity.fingerprint,
    )
