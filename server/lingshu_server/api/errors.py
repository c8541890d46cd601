"""Every error the API returns, mapped to OpenAI's error shape in one place."""

from __future__ import annotations

import logging
import traceback
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from lingshu_server.api import request_context
from lingshu_server.api.protocol import ErrorBody, ErrorResponse

logger = logging.getLogger(__name__)


class APIError(Exception):
    """An error with an HTTP status and OpenAI's {message, type, param, code}."""

    status: int = HTTPStatus.BAD_REQUEST
    type: str = "invalid_request_error"
    code: str | None = None
    rejection: str | None = "bad_input"  # the lingshu_rejected_requests_total reason
    headers: dict[str, str] | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def body(self) -> ErrorResponse:
        return error_body(self.message, self.type, self.param, self.code)


class InvalidRequestError(APIError):
    pass


class ContextLengthExceededError(APIError):
    code = "context_length_exceeded"


class ModelNotFoundError(APIError):
    status = HTTPStatus.NOT_FOUND
    code = "model_not_found"


class UnsupportedMediaTypeError(APIError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    code = "unsupported_media_type"


class EngineUnavailableError(APIError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    type = "server_error"
    code = "engine_unavailable"
    rejection = None

    def __init__(self, message: str, *, code: str | None = None, retry_after_s: int = 5):
        super().__init__(message, code=code)
        self.headers = {"Retry-After": str(retry_after_s)}


class DrainingError(EngineUnavailableError):
    code = "server_shutting_down"
    rejection = "draining"


class PacsUnavailableError(APIError):
    """The PACS behind a DICOMweb image URL could not be reached or failed (502)."""

    status = HTTPStatus.BAD_GATEWAY
    type = "server_error"
    code = "dicomweb_unavailable"
    rejection = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: int = 10,
    ):
        super().__init__(message, param=param, code=code)
        self.headers = {"Retry-After": str(retry_after_s)}


class PacsTimeoutError(PacsUnavailableError):
    """The PACS did not answer a DICOMweb request in time (504)."""

    status = HTTPStatus.GATEWAY_TIMEOUT
    code = "dicomweb_timeout"


class RequestTimeoutError(APIError):
    status = HTTPStatus.REQUEST_TIMEOUT
    code = "request_timeout"
    rejection = "timeout"


class HeadersTooLargeError(APIError):
    status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    code = "headers_too_large"
    rejection = "too_large"


class InternalServerError(APIError):
    status = HTTPStatus.INTERNAL_SERVER_ERROR
    type = "server_error"
    code = "internal_error"
    rejection = None


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> ErrorResponse:
    return ErrorResponse(error=ErrorBody(message=message, type=type_, param=param, code=code))


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


def _param_path(loc: tuple[Any, ...]) -> str | None:
    """('body', 'messages', 0, 'content') -> 'messages[0].content', as OpenAI names params."""
    parts: list[str] = []
    for item in loc:
        if item == "body" and not parts:
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif isinstance(item, str) and "[" not in item and "-" not in item:
            # skip pydantic's union-branch tags ('str', 'tagged-union[...]') and the
            # discriminator value that precedes a field of the same name ('image_url.image_url')
            if item in {"str", "list", "int", "float", "bool", "dict"} and parts:
                continue
            if parts and parts[-1].lstrip(".") == item:
                continue
            parts.append(("." if parts else "") + item)
    return "".join(parts) or None


_EXPECTED_TYPES = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean",
    "string_type": "a string",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


# bool before int: True is an int to Python, a boolean to JSON
_JSON_KINDS = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a decimal number"),
    (str, "a string"),
    (list, "an array"),
    (dict, "an object"),
    (type(None), "null"),
)


def _json_kind(value: Any) -> str:
    return next((kind for cls, kind in _JSON_KINDS if isinstance(value, cls)), "an unknown type")


def validation_error(exc: RequestValidationError) -> APIError:
    errors = exc.errors()
    if not errors:
        return InvalidRequestError("invalid request")
    # With unions pydantic reports every branch; the deepest location is the most specific.
    first = max(errors, key=lambda e: len(e.get("loc", ())))
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return InvalidRequestError("the request body is not valid JSON")
    if loc in ((), ("body",)) and first.get("type") in {"missing", "model_attributes_type"}:
        return InvalidRequestError("the request body must be a JSON object")
    param = _param_path(loc)
    message = first.get("msg", "invalid value")
    expected = _EXPECTED_TYPES.get(first.get("type", ""))
    if expected is not None and param is not None:
        # OpenAI's wording; its types are strict ("10" is not an integer)
        got = _json_kind(first.get("input"))
        message = f"Invalid type for '{param}': expected {expected}, but got {got} instead."
        return InvalidRequestError(message, param=param, code="invalid_type")
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return InvalidRequestError(f"{param}: {message}" if param else message, param=param)


def _json(status: int, body: ErrorResponse, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


_HTTP_TYPES = {
    HTTPStatus.NOT_FOUND: ("not_found_error", "not_found"),
    HTTPStatus.METHOD_NOT_ALLOWED: ("invalid_request_error", "method_not_allowed"),
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: ("invalid_request_error", "unsupported_media_type"),
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: ("invalid_request_error", "request_too_large"),
}


def stack_without_message(exc: BaseException) -> str:
    """Where an exception came from, without its message (which may quote patient data)."""
    return "".join(traceback.format_tb(exc.__traceback__))


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
