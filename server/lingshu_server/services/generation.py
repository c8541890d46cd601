"""One request's engine work as the service sees it: its steps, a deadline, an admission slot."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, TypeVar

from lingshu_server.core import request_context
from lingshu_server.engine.interface import EngineStep
from lingshu_server.services.admission import AdmissionController

T = TypeVar("T")


class EngineRun(Generic[T]):
    """Steps of one engine request, cut off at an optional deadline.

    When the deadline passes, the engine request is aborted (closing the generator aborts it)
    and `timed_out` is set; the caller finishes what was generated with finish_reason
    "length", as if max_tokens had been reached.
    """

    def __init__(
        self,
        *,
        request_id: str,
        steps: AsyncGenerator[T, None],
        deadline: float | None,
        release: Callable[[], None],
        tokens_of: Callable[[T], int] | None = None,
    ):
        self.request_id = request_id
        self._steps = steps
        self._deadline = deadline
        self._release = release
        self._tokens_of = tokens_of
        self._closed = False
        self.timed_out = False

    async def next(self) -> T | None:
        step = await self._next()
        if step is not None and self._tokens_of is not None:
            use_tokens(self._tokens_of(step))  # the tenant's quota counts them as they come
        return step

    async def _next(self) -> T | None:
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


async def start_run(
    admission: AdmissionController,
    request_id: str,
    deadline: float | None,
    prepare: Callable[[], Awaitable[AsyncGenerator[T, None]]],
    tokens_of: Callable[[T], int] | None = None,
) -> tuple[EngineRun[T], T | None]:
    """Take a generation slot, `prepare` the engine work (prompt building included) and wait
    for its first step, so that every error until then is still a plain 4xx/5xx answer. On a
    failure the slot is given back and the engine request closed. The first step is None when
    the deadline passed before it. `tokens_of` counts a step's completion tokens (for quotas,
    with the prompt's once it is built)."""
    await admission.acquire()
    run: EngineRun[T] | None = None
    try:
        run = EngineRun(
            request_id=request_id,
            steps=await prepare(),
            deadline=deadline,
            release=admission.release,
            tokens_of=tokens_of,
        )
        ctx = request_context.get()
        if ctx is not None and ctx.prompt_tokens:
            use_tokens(ctx.prompt_tokens)
        first = await run.next()
    except BaseException:
        if run is not None:
            await run.close()
        else:
            admission.release()
        raise
    return run, first


async def merged(
    runs: list[AsyncGenerator[EngineStep, None]],
) -> AsyncGenerator[tuple[int, EngineStep], None]:
    """The steps of several engine requests as they come, each with its request's index.
    Closing this iterator closes (so aborts) every request still running."""
    pending = {asyncio.ensure_future(anext(run)): i for i, run in enumerate(runs)}
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=pending.__getitem__):
                index = pending.pop(task)
                try:
                    step = task.result()
                except StopAsyncIteration:
                    continue
                pending[asyncio.ensure_future(anext(runs[index]))] = index
                yield index, step
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for run in runs:
            with contextlib.suppress(Exception):
                await run.aclose()


def use_tokens(tokens: int) -> None:
    ctx = request_context.get()
    if ctx is not None:
        ctx.use_tokens(tokens)


def step_tokens(step: EngineStep) -> int:
    """Completion tokens one engine step produced, over its choices."""
    return sum(len(choice.token_ids) for choice in step.choices)


def timeout_of(requested: float | None, server: float | None) -> float | None:
    """A request's own time limit, within the server's."""
    limits = [t for t in (requested, server) if t is not None]
    return min(limits) if limits else None


def deadline_after(seconds: float | None) -> float | None:
    """A deadline on the event loop's clock, `seconds` from now."""
    if seconds is None:
        return None
    return asyncio.get_running_loop().time() + seconds


def elapsed_since(started: float) -> float:
    return time.perf_counter() - started
