"""The server's life: loading stages, ready, draining on SIGTERM, engine death.

The HTTP port opens first and the engine loads in a worker thread, so while big weights load
`/health` answers 503 with the current stage and how long loading has taken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum

logger = logging.getLogger(__name__)


class Stage(StrEnum):
    STARTING = "starting"
    CHECKING_MODEL = "checking_model"
    LOADING_ENGINE = "loading_engine"
    PREPARING = "preparing_chat_template"
    READY = "ready"
    DRAINING = "draining"
    ENGINE_DEAD = "engine_dead"
    FAILED = "failed"


class Lifecycle:
    def __init__(self) -> None:
        self.stage = Stage.STARTING
        self.started = time.monotonic()
        self._stage_started = self.started
        self.in_flight = 0
        self.failure: str | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self, stage: Stage) -> None:
        now = time.monotonic()
        logger.info(
            "stage %s",
            stage.value,
            extra={
                "fields": {
                    "stage": stage.value,
                    "previous": self.stage.value,
                    "previous_s": round(now - self._stage_started, 1),
                    "elapsed_s": round(now - self.started, 1),
                }
            },
        )
        self.stage, self._stage_started = stage, now

    @property
    def ready(self) -> bool:
        return self.stage is Stage.READY

    @property
    def serving(self) -> bool:
        """The engine is up (ready, or finishing in-flight work while draining)."""
        return self.stage in (Stage.READY, Stage.DRAINING)

    def status(self) -> dict[str, object]:
        body: dict[str, object] = {
            "status": "ok" if self.serving else self.stage.value,
            "stage": self.stage.value,
            "elapsed_s": round(time.monotonic() - self.started, 1),
        }
        if self.failure:
            body["error"] = self.failure
        return body

    def request_started(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def request_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def drain(self, timeout: float) -> bool:
        """Stop taking work; wait for in-flight requests. True if they all finished."""
        if self.stage is Stage.READY:
            self.enter(Stage.DRAINING)
        logger.info(
            "draining", extra={"fields": {"in_flight": self.in_flight, "timeout_s": timeout}}
        )
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            logger.warning("drain timeout passed", extra={"fields": {"in_flight": self.in_flight}})
            return False
        return True


async def watch_engine(
    is_healthy: Callable[[], Awaitable[bool]],
    lifecycle: Lifecycle,
    on_death: Callable[[], None],
    interval: float = 1.0,
) -> None:
    """Poll the engine; when its core dies, mark it and ask the server to exit non-zero."""
    while True:
        await asyncio.sleep(interval)
        if lifecycle.serving and not await is_healthy():
            logger.error("the engine core died; exiting so the orchestrator restarts us")
            lifecycle.enter(Stage.ENGINE_DEAD)
            on_death()
            return
