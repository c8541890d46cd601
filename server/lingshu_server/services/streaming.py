"""Server-sent events as OpenAI sends them, and the one place a stream's failures are handled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TypeVar

from lingshu_server.core.errors import APIError, InternalServerError, stack_without_message
from lingshu_server.services.generation import EngineRun
from lingshu_server.services.request_records import note_disconnect, note_stream_error

logger = logging.getLogger(__name__)
T = TypeVar("T")

# JSON leaves these unescaped, but Python's str.splitlines (which some SSE clients, httpx's
# iter_lines among them, use to split events into lines) breaks lines at them: escaped, an event
# is one line for every client. (Control characters below U+0020 are escaped by JSON already.)
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def sse(data: str, event: str | None = None) -> str:
    """One event; `event` names its type (the Responses API's streams do)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data.translate(_LINE_BREAKS)}\n\n"


# Where a service's events are about to wait (for the engine's next step, for work in the
# pool), its iterator yields FLUSH: the events since the last FLUSH then go out together, as one
# body message, which the HTTP server writes to the socket in one write. A step's events (the
# role chunk and the first text, a choice's last text and its finish, the usage and [DONE])
# reach the client together, and each event whole, as soon as they exist.
FLUSH = ""


async def _batches(events: AsyncIterator[str], pending: list[str]) -> AsyncIterator[str]:
    """`events` joined between FLUSHes; what came after the last one stays in `pending` (also
    when `events` fails)."""
    async for event in events:
        if event:
            pending.append(event)
        elif pending:
            batch = "".join(pending)
            pending.clear()
            yield batch


async def by_step(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """`events` joined between FLUSHes (for iterators that turn their own failures into
    events; `guarded_events` does this itself)."""
    pending: list[str] = []
    async for batch in _batches(events, pending):
        yield batch
    if pending:
        yield "".join(pending)


async def guarded_events(events: AsyncIterator[str], run: EngineRun[T]) -> AsyncIterator[str]:
    """`events` as the client gets them, joined between FLUSHes: a failure after the 200
    arrives as an error event, the engine request is closed whatever happens, and
    `data: [DONE]` ends the stream (in the same write as the events before it)."""
    pending: list[str] = []
    try:
        async for batch in _batches(events, pending):
            yield batch
    except APIError as exc:
        note_stream_error(exc)
        pending.append(sse(exc.body().model_dump_json()))
    except (asyncio.CancelledError, GeneratorExit):
        note_disconnect()
        raise
    except Exception as exc:
        error = unexpected(exc)
        note_stream_error(error)
        pending.append(sse(error.body().model_dump_json()))
    finally:
        await run.close()
    pending.append(sse("[DONE]"))
    yield "".join(pending)


def unexpected(exc: Exception) -> InternalServerError:
    """A bug met mid-stream: logged by type and stack (its message may quote the request), and
    told to the client as a bare internal error."""
    logger.error("stream failed: %s\n%s", type(exc).__name__, stack_without_message(exc))
    return InternalServerError("internal server error")
