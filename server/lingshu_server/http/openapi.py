"""The OpenAPI document as the server really answers: completions and their SSE chunks, the
error shape for every status a route can return, the bearer scheme, and no 422 (FastAPI's
validation status; this server answers 400 in OpenAI's shape)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter

from lingshu_server.core.errors import ErrorResponse
from lingshu_server.protocol.chat import ChatCompletion, ChatCompletionChunk
from lingshu_server.protocol.completions import Completion, CompletionChunk
from lingshu_server.protocol.preview import PreviewResponse
from lingshu_server.protocol.reports import ReportChunk, ReportNotStoredResponse, ReportResponse
from lingshu_server.protocol.responses import ResponsesResponse, StreamEvent

ERROR_DESCRIPTIONS = {
    400: "Invalid request: a wrong type or value (naming the `param`), a body that is not "
    "JSON, an image that cannot be used, a token id out of the vocabulary, or a prompt over "
    "the context (`context_length_exceeded`)",
    401: "Missing or wrong API key (checked before the body is read)",
    404: "Unknown model (neither a served name nor a LoRA adapter), or a stored response, "
    "conversation, file or batch that does not exist or is not the caller's",
    409: "The object is not in a state that allows this (cancelling a batch that has ended)",
    502: "The PACS could not be reached or failed (Retry-After)",
    504: "The PACS did not answer in time (Retry-After)",
    408: "The request body did not arrive within --body-read-timeout",
    413: "The request body is over --max-request-bytes (an upload to /v1/files: --max-file-bytes)",
    415: "The body is not sent as Content-Type: application/json",
    429: "The key's rate limit is reached (Retry-After)",
    431: "The request line and headers are over --max-header-bytes",
    500: "A server bug; the message says nothing about the request",
    503: "Loading, draining, engine down, at capacity, too many connections, or the database "
    "of stored state unreachable (Retry-After)",
    507: "The database of stored state is full; nothing was stored",
}
# Answered for any request before a route runs: auth, body and head limits, connections.
COMMON_ERRORS = (408, 413, 431, 503)
CHUNK_SCHEMA = "ChatCompletionChunk"


def sse_event(chunk_schema: str) -> dict[str, Any]:
    """Before OpenAPI 3.2 (FastAPI writes 3.1) an event stream's `schema` describes one event."""
    description = (
        "With `stream: true`: server-sent events. Each `data:` line holds a "
        f"`{chunk_schema}` (#/components/schemas/{chunk_schema}); a failure after the first "
        "event arrives as a `data:` line holding an `ErrorResponse`; the stream ends with "
        "`data: [DONE]`."
    )
    return {
        "type": "object",
        "description": description,
        "properties": {
            "data": {
                "type": "string",
                "anyOf": [
                    {"const": "[DONE]"},
                    {
                        "contentMediaType": "application/json",
                        "contentSchema": {
                            "anyOf": [
                                {"$ref": f"#/components/schemas/{chunk_schema}"},
                                {"$ref": "#/components/schemas/ErrorResponse"},
                            ]
                        },
                    },
                ],
            },
            "event": {"type": "string"},
            "id": {"type": "string"},
        },
        "required": ["data"],
    }


SSE_EVENT = sse_event(CHUNK_SCHEMA)
STREAM_EVENT_SCHEMA = "ResponseStreamEvent"
RESPONSES_SSE_DESCRIPTION = (
    "With `stream: true`: the Responses API's server-sent events. Each event's `event:` line "
    f"names its type and its `data:` line holds it (#/components/schemas/{STREAM_EVENT_SCHEMA}): "
    "`response.created`, `response.in_progress`, the output items and their deltas, then "
    "`response.completed` (or `response.incomplete`, cut off at max_output_tokens); a failure "
    "after the first event is an `error` event and `response.failed`. No `[DONE]`."
)
RESPONSES_SSE_EVENT = {
    "type": "object",
    "description": RESPONSES_SSE_DESCRIPTION,
    "properties": {
        "event": {"type": "string"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": f"#/components/schemas/{STREAM_EVENT_SCHEMA}"},
        },
        "id": {"type": "string"},
    },
    "required": ["event", "data"],
}
# Stream chunks and events are no route's response model: their schemas are added here.
STREAM_SCHEMAS: dict[str, Any] = {
    CHUNK_SCHEMA: ChatCompletionChunk,
    "CompletionChunk": CompletionChunk,
    STREAM_EVENT_SCHEMA: StreamEvent,
    "ReportChunk": ReportChunk,
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[status]}
        for status in sorted({*statuses, *COMMON_ERRORS})
    }


CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ChatCompletion,
        "description": "The completion (JSON), or with `stream: true` its chunks (SSE)",
        "content": {"text/event-stream": {"schema": SSE_EVENT}},
    },
    **error_responses(400, 401, 404, 415, 429, 500),
}
RESPONSES_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ResponsesResponse,
        "description": "The response (JSON), or with `stream: true` its events (SSE)",
        "content": {"text/event-stream": {"schema": RESPONSES_SSE_EVENT}},
    },
    **error_responses(400, 401, 404, 415, 429, 500, 507),
}
COMPLETION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": Completion,
        "description": "The completion (JSON), or with `stream: true` its chunks (SSE)",
        "content": {"text/event-stream": {"schema": sse_event("CompletionChunk")}},
    },
    **error_responses(400, 401, 404, 415, 429, 500),
}
TOKENIZE_RESPONSES = error_responses(400, 401, 404, 415, 429, 500)
PREVIEW_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": PreviewResponse,
        "description": "The image (or a video's sampled frames) as the model sees it",
    },
    **error_responses(400, 401, 415, 429, 500),
}
REPORT_SSE_EVENT = sse_event("ReportChunk")
REPORT_SSE_EVENT["description"] = (
    "With `stream: true`: server-sent events. Each `data:` line holds a `ReportChunk` (the "
    "text as it is generated), then one holds the `Report` (#/components/schemas/"
    "ReportResponse) with its renderings; a failure after the first event (a PACS that "
    "refused the SR or a FHIR server that refused the Bundle included: the report with what "
    "was stored comes first) arrives as a `data:` line holding an `ErrorResponse`; the "
    "stream ends with `data: [DONE]`."
)
REPORT_NOT_STORED = {
    "model": ReportNotStoredResponse,
    "description": "The report was drafted but the PACS refused its SR (or acknowledged it and "
    "does not hold it), or the FHIR server refused its Bundle, failed or did not answer: the "
    "error (with the PACS's reason, the FHIR server's OperationOutcome) and the whole report, "
    "with what was stored",
}
REPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ReportResponse,
        "description": "The drafted report (JSON), or with `stream: true` its text and then "
        "the report (SSE)",
        "content": {"text/event-stream": {"schema": REPORT_SSE_EVENT}},
    },
    **error_responses(400, 401, 404, 415, 429, 500),
    502: REPORT_NOT_STORED,
    504: REPORT_NOT_STORED,
}
REPORT_STORE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ReportResponse, "description": "The report, its SR stored"},
    **error_responses(400, 401, 404, 429, 500),
    502: REPORT_NOT_STORED,
    504: REPORT_NOT_STORED,
}
V1_RESPONSES = error_responses(401, 429)


def install_openapi(app: FastAPI) -> None:
    """Generate the document once, then drop FastAPI's 422 and add the stream event schemas."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for path in document.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        for component, kind in STREAM_SCHEMAS.items():
            event = TypeAdapter(kind).json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in event.pop("$defs", {}).items():
                schemas.setdefault(name, definition)
            schemas[component] = event
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way
