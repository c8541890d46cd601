"""Limits that keep the server standing at its edge: body size and read time, per-key rates."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lingshu_server.core.errors import (
    APIError,
    RateLimitedError,
    RequestTimeoutError,
    RequestTooLargeError,
)
from lingshu_server.http.error_handlers import send_api_error


class BodySizeLimitMiddleware:
    """413 for bodies over the limit, decided from Content-Length or while the body streams
    in, before anything parses it; 408 for a body that takes longer than `read_timeout` to
    arrive (a client that promises a body and never sends it). The body read here is handed
    on to the app unchanged. Uploads (`streamed` paths) are not read here: their pieces go to
    the route as they arrive, under a cap of their own, and each piece has `read_timeout`."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        read_timeout: float,
        streamed: Mapping[str, int] | None = None,
    ):
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout
        # POST paths whose bodies go to the route as they arrive (uploads), with their own cap
        self.streamed = dict(streamed or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.streamed.get(scope["path"]) if scope["method"] == "POST" else None
        declared = dict(scope["headers"]).get(b"content-length")
        limit = self.max_bytes if cap is None else cap
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(send, limit)
            return
        if cap is not None:
            await self.app(scope, self._streamed_receive(receive, cap), send)
            return
        try:
            async with asyncio.timeout(self.read_timeout):
                chunks = await self._read_body(receive)
        except TimeoutError:
            error = RequestTimeoutError(
                f"the request body did not arrive within {self.read_timeout:g} seconds"
            )
            await send_api_error(send, error, close=True)
            return
        if chunks is None:  # the client left while sending
            return
        if isinstance(chunks, int):
            await self._too_large(send, self.max_bytes)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # later calls wait for the client's disconnect

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> list[bytes] | int | None:
        """The body's chunks; the byte count once it passes the limit; None if the client left."""
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                return received
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks

    def _streamed_receive(self, receive: Receive, cap: int) -> Receive:
        """The body as it arrives, to a route that reads it piece by piece: the cap and the read
        timeout (for each piece, not the whole: an upload may rightly take minutes) raise in
        the route, whose handler answers and closes the connection."""
        received = 0

        async def streamed() -> Message:
            nonlocal received
            try:
                async with asyncio.timeout(self.read_timeout):
                    message = await receive()
            except TimeoutError:
                error: APIError = RequestTimeoutError(
                    f"the request body stopped arriving for {self.read_timeout:g} seconds"
                )
                error.headers = {"Connection": "close"}
                raise error from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    error = _too_large_error(cap)
                    error.headers = {"Connection": "close"}
                    raise error
            return message

        return streamed

    async def _too_large(self, send: Send, limit: int) -> None:
        await send_api_error(send, _too_large_error(limit), close=True)


def _too_large_error(limit: int) -> RequestTooLargeError:
    return RequestTooLargeError(
        f"request body is larger than the {limit} bytes this server accepts"
    )


class RateLimiter:
    """A token bucket per API key: `per_minute` requests a minute, bursts up to that many."""

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str) -> None:
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = math.ceil((1.0 - tokens) / self.rate)
            raise RateLimitedError(
                f"rate limit of {self.capacity:g} requests per minute reached for this key",
                retry_after_s=wait,
            )
        self._buckets[key] = (tokens - 1.0, now)
