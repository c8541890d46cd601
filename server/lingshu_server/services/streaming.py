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


async def guarded_events(events: AsyncIterator[str], run: EngineRun[T]) -> AsyncIterator[str]:
    """`events` as the client gets them: a failure after the 200 arrives as an error event, the
    engine request is closed whatever happens, and `data: [DONE]` ends the stream."""
    try:
        async for event in events:
            yield event
    except APIError as exc:
        note_stream_error(exc)
        yield sse(exc.body().model_dump_json())
    except (asyncio.CancelledError, GeneratorExit):
        note_disconnect()
        raise
    except Exception as exc:
        error = unexpected(exc)
        note_stream_error(error)
        yield sse(error.body().model_dump_json())
    finally:
        await run.close()
    yield sse("[DONE]")


def unexpected(exc: Exception) -> InternalServerError:
    """A bug met mid-stream: logged by type and stack (its message may quote the request), and
    told to the client as a bare internal error."""
    logger.error("stream failed: %s\n%s", type(exc).__name__, stack_without_message(exc))
    return InternalServerError("internal server error")
