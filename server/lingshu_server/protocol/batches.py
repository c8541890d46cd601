"""OpenAI's Batch API wire models: the batch object, its creation request, its list page, and
the lines of its output and error files."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import field_validator

from lingshu_server.protocol.common import ResponseModel, Text, WireModel
from lingshu_server.protocol.conversations import Metadata

# The endpoints a batch's lines may call (each through the same service as the live route).
BatchEndpoint = Literal["/v1/chat/completions", "/v1/responses", "/v1/completions"]
BatchStatus = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]

_WINDOW = re.compile(r"([1-9][0-9]{0,5})([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_WINDOW_S = 7 * 86400


def window_seconds(window: str) -> int:
    """`24h` (OpenAI's one value), or any `<n>s|m|h|d` up to seven days -> seconds."""
    match = _WINDOW.fullmatch(window)
    if match is None:
        raise ValueError("completion_window must be a duration such as '24h' (s, m, h or d)")
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds > MAX_WINDOW_S:
        raise ValueError("completion_window may be at most 7d")
    return seconds


class BatchCreateRequest(WireModel):
    input_file_id: Text
    endpoint: BatchEndpoint
    completion_window: Text = "24h"
    metadata: Metadata | None = None

    @field_validator("completion_window")
    @classmethod
    def _window(cls, value: str) -> str:
        window_seconds(value)
        return value


class RequestCounts(ResponseModel):
    total: int
    completed: int
    failed: int


class BatchError(ResponseModel):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(ResponseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class BatchObject(ResponseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    metadata: dict[str, str] | None = None


class BatchList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[BatchObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


def output_line(
    line_id: str,
    custom_id: str,
    *,
    status_code: int | None,
    request_id: str | None,
    body: dict[str, Any] | None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One line of a batch's output or error file, in OpenAI's shape: the answer as the live
    endpoint gave it (`response`), or why the line never got one (`error`)."""
    response = (
        None
        if status_code is None
        else {"status_code": status_code, "request_id": request_id, "body": body}
    )
    return {"id": line_id, "custom_id": custom_id, "response": response, "error": error}
