"""One engine request as the service sees it: its steps, a deadline, an admission slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from lingshu_server.engine.vllm_engine import EngineStep


class EngineRun:
    """Steps of one engine request, cut off at an optional deadline.

    When the deadline passes, the engine request is aborted (closing the generator aborts it)
    and `timed_out` is set; the caller finishes what was generated with finish_reason
    "length", as if max_tokens had been reached.
    """

    def __init__(
        self,
        request_id: str,
        steps: AsyncIterator[EngineStep],
        deadline: float | None,
        release: Callable[[], None],
    ):
        self.request_id = request_id
        self._steps = steps
        self._deadline = deadline
        self._release = release
        self._closed = False
        self.timed_out = False

    async def next(self) -> EngineStep | None:
        if self.timed_out:
            return None
        if self._deadline is None:
            return await anext(self._steps, None)
        try:
            async with asyncio.timeout_at(self._deadline):
                return await anext(self._steps, None)
        except TimeoutError:
            self.timed_out = True
            return None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._steps.aclose()
        finally:
            self._release()


def deadline_after(seconds: float | None) -> float | None:
    """A deadline on the event loop's clock, `seconds` from now."""
    if seconds is None:
        return None
    return asyncio.get_running_loop().time() + seconds


def elapsed_since(started: float) -> float:
    return time.perf_counter() - started
