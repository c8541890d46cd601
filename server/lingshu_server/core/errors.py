"""Every error the API returns, with its HTTP status and OpenAI's error shape, in one place.

No web framework here: inputs, the engine and services raise these; `http/error_handlers.py`
turns them into responses."""

from __future__ import annotations

import logging
import traceback
from http import HTTPStatus
from typing import Any, Protocol

from pydantic import BaseModel

logger = logging.getLogger(__name__)


class ValidationErrors(Protocol):
    """pydantic's ValidationError, or FastAPI's RequestValidationError."""

    def errors(self) -> Any: ...


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


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


class ReportNotFoundError(APIError):
    """No drafted report by this id for this caller (never stored, expired, or another's)."""

    status = HTTPStatus.NOT_FOUND
    code = "report_not_found"


class InvalidFileError(APIError):
    """An upload refused as a whole: empty, a purpose not accepted, or a `batch` file with a
    bad line (the message names the line and what is wrong, never the line's content)."""

    code = "invalid_file"

    def __init__(self, message: str, *, param: str = "file", code: str | None = None):
        super().__init__(message, param=param, code=code)


class UnsupportedMediaTypeError(APIError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    code = "unsupported_media_type"


class RetryLaterError(APIError):
    """An error the client should retry after a while: the Retry-After header says when."""

    retry_after_s: int = 1

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: int | None = None,
    ):
        super().__init__(message, param=param, code=code)
        seconds = self.retry_after_s if retry_after_s is None else retry_after_s
        self.headers = {"Retry-After": str(seconds)}


class EngineUnavailableError(RetryLaterError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    type = "server_error"
    code = "engine_unavailable"
    rejection: str | None = None
    retry_after_s = 5


class DrainingError(EngineUnavailableError):
    code = "server_shutting_down"
    rejection = "draining"


class PacsUnavailableError(RetryLaterError):
    """The PACS behind a DICOMweb image URL could not be reached or failed (502)."""

    status = HTTPStatus.BAD_GATEWAY
    type = "server_error"
    code = "dicomweb_unavailable"
    rejection: str | None = None
    retry_after_s = 10


class PacsTimeoutError(PacsUnavailableError):
    """The PACS did not answer a DICOMweb request in time (504)."""

    status = HTTPStatus.GATEWAY_TIMEOUT
    code = "dicomweb_timeout"


class StorageUnavailableError(RetryLaterError):
    """The database of stored state cannot be reached (or answered with an error)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    type = "server_error"
    code = "storage_unavailable"
    rejection: str | None = None
    retry_after_s = 5


class StorageFullError(APIError):
    """The database of stored state has no room left for what a request would store."""

    status = HTTPStatus.INSUFFICIENT_STORAGE
    type = "server_error"
    code = "storage_full"
    rejection: str | None = None


class NotFoundError(APIError):
    """A stored object that does not exist, or belongs to someone else (never told apart)."""

    status = HTTPStatus.NOT_FOUND
    type = "invalid_request_error"
    code = "not_found"
    rejection: str | None = None


class ConflictError(APIError):
    """The object is not in a state that allows this (cancelling a finished batch)."""

    status = HTTPStatus.CONFLICT
    type = "invalid_request_error"
    code = "conflict"
    rejection: str | None = None


class PacsStoreRefusedError(APIError):
    """The PACS answered a STOW-RS request but did not store the instance (502, with the PACS's
    reason); retrying the same request will not help."""

    status = HTTPStatus.BAD_GATEWAY
    type = "server_error"
    code = "dicomweb_store_refused"
    rejection: str | None = None


class FhirUnavailableError(RetryLaterError):
    """The FHIR server a report's Bundle goes to could not be reached or failed (502)."""

    status = HTTPStatus.BAD_GATEWAY
    type = "server_error"
    code = "fhir_unavailable"
    rejection: str | None = None
    retry_after_s = 10


class FhirTimeoutError(FhirUnavailableError):
    """The FHIR server did not answer in time (504)."""

    status = HTTPStatus.GATEWAY_TIMEOUT
    code = "fhir_timeout"


class FhirRefusedError(APIError):
    """The FHIR server answered but did not take the Bundle (502, with its OperationOutcome);
    retrying the same request will not help."""

    status = HTTPStatus.BAD_GATEWAY
    type = "server_error"
    code = "fhir_refused"
    rejection: str | None = None


class ErrorWithReport(ErrorResponse):
    report: dict[str, Any]


class ReportNotStoredError(APIError):
    """A report was drafted but its SR could not be stored, or its Bundle posted to the FHIR
    server (502, 504 when the PACS or FHIR server did not answer in time): the error's body
    still holds the whole report under `report`, with whatever was stored."""

    status = HTTPStatus.BAD_GATEWAY
    type = "server_error"
    code = "dicomweb_store_refused"
    rejection: str | None = None

    def __init__(self, cause: APIError, report: dict[str, Any] | None):
        super().__init__(
            f"the report was drafted but not stored: {cause.message}",
            param=cause.param,
            code=cause.code,
        )
        self.status = HTTPStatus.GATEWAY_TIMEOUT if cause.status == 504 else self.status
        self.headers = cause.headers
        self.report = report

    def body(self) -> ErrorResponse:
        plain = super().body()
        return (
            plain if self.report is None else ErrorWithReport(error=plain.error, report=self.report)
        )


class RequestTimeoutError(APIError):
    status = HTTPStatus.REQUEST_TIMEOUT
    code = "request_timeout"
    rejection = "timeout"


class HeadersTooLargeError(APIError):
    status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    code = "headers_too_large"
    rejection = "too_large"


class OverloadedError(RetryLaterError):
    """Every generation slot is taken and the line is full."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    type = "server_error"
    code = "server_overloaded"
    rejection = "overloaded"


class RateLimitedError(RetryLaterError):
    status = HTTPStatus.TOO_MANY_REQUESTS
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    rejection = "rate_limited"


class QuotaExceededError(RateLimitedError):
    """A tenant's quota (requests or tokens a minute, tokens a day, requests at once) is used up;
    OpenAI's `x-ratelimit-*` headers say how it stands."""

    code = "quota_exceeded"

    def __init__(self, message: str, *, retry_after_s: int, rate_limit_headers: dict[str, str]):
        super().__init__(message, retry_after_s=retry_after_s)
        self.headers = {**rate_limit_headers, **(self.headers or {})}


class RequestTooLargeError(APIError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    code = "request_too_large"
    rejection = "too_large"


class AuthenticationError(APIError):
    status = HTTPStatus.UNAUTHORIZED
    code = "invalid_api_key"
    rejection = "auth"


class InvalidTokenError(AuthenticationError):
    """A bearer token that is not a valid access token of an accepted issuer (RFC 6750)."""

    code = "invalid_token"
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class PermissionDeniedError(APIError):
    """A valid token without a role (or scope) this route needs (RFC 6750's 403)."""

    status = HTTPStatus.FORBIDDEN
    code = "insufficient_scope"
    rejection = "auth"
    headers = {"WWW-Authenticate": 'Bearer error="insufficient_scope"'}


class InternalServerError(APIError):
    status = HTTPStatus.INTERNAL_SERVER_ERROR
    type = "server_error"
    code = "internal_error"
    rejection: str | None = None


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> ErrorResponse:
    return ErrorResponse(error=ErrorBody(message=message, type=type_, param=param, code=code))


def stack_without_message(exc: BaseException) -> str:
    """Where an exception came from, without its message (which may quote patient data)."""
    return "".join(traceback.format_tb(exc.__traceback__))


def _param_path(loc: tuple[Any, ...]) -> str | None:
    """('body', 'messages', 0, 'content') -> 'messages[0].content', as OpenAI names params."""
    parts: list[str] = []
    for item in loc:
        if item in ("body", "query", "path") and not parts:
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


def validation_error(exc: ValidationErrors) -> APIError:
    """A 400 naming the param, from pydantic's errors (a request body or a nested model)."""
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
