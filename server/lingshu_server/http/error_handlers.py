"""Errors turned into responses: OpenAI's error shape for our errors, FastAPI's validation
errors and Starlette's HTTP errors, and the 500 for a bug."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from lingshu_server.core import request_context
from lingshu_server.core.errors import (
    APIError,
    ErrorResponse,
    InternalServerError,
    error_body,
    stack_without_message,
    validation_error,
)

logger = logging.getLogger(__name__)


def error_response_bytes(exc: APIError, close: bool) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of an error answered below FastAPI (ASGI middleware, the protocol)."""
    body = exc.body().model_dump_json().encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in (exc.headers or {}).items()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    return headers, body


async def send_api_error(send: Send, exc: APIError, *, close: bool = False) -> None:
    """Answer an ASGI request with `exc` from middleware, before any route runs. `close` when
    the body was left unread and the client cannot be trusted to send it (a timeout)."""
    _note_rejection(exc.rejection)
    headers, body = error_response_bytes(exc, close)
    await send({"type": "http.response.start", "status": int(exc.status), "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _json(
    status: int, body: ErrorResponse, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


_HTTP_TYPES: dict[int, tuple[str, str | None]] = {
    HTTPStatus.NOT_FOUND: ("not_found_error", "not_found"),
    HTTPStatus.METHOD_NOT_ALLOWED: ("invalid_request_error", "method_not_allowed"),
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: ("invalid_request_error", "unsupported_media_type"),
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: ("invalid_request_error", "request_too_large"),
}


def _note_rejection(reason: str | None) -> None:
    ctx = request_context.get()
    if ctx is not None and reason is not None and ctx.rejection is None:
        ctx.rejection = reason


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        _note_rejection(exc.rejection)
        return _json(exc.status, exc.body(), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = validation_error(exc)
        _note_rejection(err.rejection)
        return _json(err.status, err.body())

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_, code = _HTTP_TYPES.get(exc.status_code, ("invalid_request_error", None))
        if exc.status_code >= 500:
            type_ = "server_error"
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return _json(exc.status_code, error_body(message, type_, None, code), exc.headers)


def log_unexpected(exc: BaseException) -> None:
    """The type and the stack only: an exception's message may quote request content."""
    logger.error("unhandled error: %s\n%s", type(exc).__name__, stack_without_message(exc))


def unexpected_error_response() -> JSONResponse:
    """The 500 for a bug: OpenAI's shape, nothing about the cause (see TelemetryMiddleware)."""
    err = InternalServerError("internal server error")
    return _json(err.status, err.body())
