"""Connection guards uvicorn's httptools protocol lacks: a cap on the size of a request head
(431), a deadline for a request head to arrive (slow-header clients), and a connection limit
answered in OpenAI's error shape (503). They act before the app, so they cost no app work."""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from lingshu_server.core.errors import (
    APIError,
    HeadersTooLargeError,
    InvalidRequestError,
    OverloadedError,
)
from lingshu_server.http.error_handlers import error_response_bytes, send_api_error
from lingshu_server.http.tls import client_certificate


class _HeadTooLarge(Exception):
    """Raised from a parser callback; httptools turns it into HttpParserCallbackError."""


async def _too_many_connections(scope: Scope, receive: Receive, send: Send) -> None:
    error = OverloadedError("the server has too many open connections; retry shortly")
    await send_api_error(send, error, close=True)


def guarded_http_protocol(
    max_header_bytes: int, header_timeout: float, max_connections: int
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the guards above, for `uvicorn.Config(http=...)`."""

    class GuardedHttpProtocol(HttpToolsProtocol):
        _head_bytes = 0
        _head_too_large = False
        _head_timer: asyncio.TimerHandle | None = None
        _tls: dict[str, Any] | None = None

        # uvicorn's signature, narrower than asyncio's (uvicorn ignores the same check)
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._tls = client_certificate(transport)  # once: the handshake is over
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            if self._head_timer is None:
                self._arm_head_timer()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)  # ": " and CRLF
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._disarm_head_timer()
            if self._tls is not None:
                self.scope["extensions"] = {"tls": self._tls}  # type: ignore[dict-item]
            if len(self.connections) <= max_connections:
                super().on_headers_complete()
                return
            # uvicorn reads the app to run for this request from self.app
            self.app, app = _too_many_connections, self.app
            try:
                super().on_headers_complete()
            finally:
                self.app = app

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # An idle keep-alive connection, or one still sending a body nobody reads (a 401),
            # gets as long as a request head would.
            if not self.transport.is_closing():
                self._arm_head_timer()

        def send_400_response(self, msg: str) -> None:
            """uvicorn's answer to a request it cannot parse, in OpenAI's error shape."""
            error: APIError = (
                HeadersTooLargeError(
                    f"the request line and headers are larger than the {max_header_bytes} "
                    "bytes this server accepts"
                )
                if self._head_too_large
                else InvalidRequestError("the request is not valid HTTP/1.1", code="invalid_http")
            )
            headers, body = error_response_bytes(error, close=True)
            status = HTTPStatus(error.status)
            head = f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode() + b"".join(
                name + b": " + value + b"\r\n" for name, value in headers
            )
            self.transport.write(head + b"\r\n" + body)
            self.transport.close()

        def _count(self, size: int) -> None:
            self._head_bytes += size
            if self._head_bytes > max_header_bytes:
                self._head_too_large = True
                raise _HeadTooLarge

        def _arm_head_timer(self) -> None:
            self._disarm_head_timer()
            self._head_timer = self.loop.call_later(header_timeout, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedHttpProtocol
