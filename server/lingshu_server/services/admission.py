"""Admission to the engine: a bounded number generate, a bounded number wait for a slot."""

from __future__ import annotations

import asyncio

from lingshu_server.core.errors import OverloadedError


class AdmissionController:
    """At most `max_active` requests generate at once and `max_waiting` wait for a slot;
    beyond that a request is refused at once (503, Retry-After), not after a long queue."""

    def __init__(self, max_active: int, max_waiting: int):
        self.max_active = max_active
        self.max_waiting = max_waiting
        self.active = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(max_active)

    async def acquire(self) -> None:
        """Take a generation slot, waiting in line if there is room in the line."""
        if self.active >= self.max_active and self.waiting >= self.max_waiting:
            raise OverloadedError(
                f"the server is at capacity ({self.active} requests generating, "
                f"{self.waiting} waiting); retry shortly"
            )
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.active += 1

    def release(self) -> None:
        self.active -= 1
        self._slots.release()
