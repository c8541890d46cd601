"""Per-request facts gathered along the way, for the access log, the audit log and metrics."""

from __future__ import annotations

import contextvars
import re
import time
import uuid
from dataclasses import dataclass, field

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass
class ImageRecord:
    sha256: str | None  # None unless an audit log is configured
    format: str
    encoded_bytes: int
    width: int
    height: int
    tokens: int
    source: dict[str, str] | None = None  # DICOMweb: PACS host and UIDs (audit log only)


@dataclass
class RequestContext:
    request_id: str
    method: str
    route: str = "other"
    key_id: str | None = None
    status: int = 0
    started: float = field(default_factory=time.perf_counter)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    images: list[ImageRecord] = field(default_factory=list)
    client_disconnected: bool = False
    response_started: bool = False
    rejection: str | None = None  # why the server turned the request away, if it did
    stream_error: str | None = None  # a stream that failed after its 200: the error's code
    # stored objects this request created, read or deleted: ids and hashes (audit log only)
    stored: list[dict[str, object]] = field(default_factory=list)
    # A drafted report: its id, UIDs and hashes (never its text), for the audit log only
    report: dict[str, str] | None = None

    @property
    def owner(self) -> str:
        """Who stored objects belong to: the API key's id, or `anonymous` on an open server."""
        return f"key:{self.key_id}" if self.key_id else "anonymous"


current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "lingshu_request", default=None
)


def request_id_from(header: str | None) -> str:
    """The client's X-Request-Id if it is a sane token, else a new one (never echo junk)."""
    if header and _REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def get() -> RequestContext | None:
    return current.get()
