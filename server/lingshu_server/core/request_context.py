"""Per-request facts gathered along the way, for the access log, the audit log and metrics."""

from __future__ import annotations

import contextvars
import re
import time
import uuid
from collections.abc import Callable
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
    # Who asked: the key id, `<issuer>#<subject>` of a token, `cert:<subject DN>` of a client
    # certificate; and the tenant it belongs to, if one is named (key file, token claim,
    # certificate subject). Never the credential itself.
    identity: str | None = None
    tenant: str | None = None
    # The engine's scheduling priority for what this request generates: people 0, batch lines
    # lower (a higher number; see --batch-priority).
    priority: int = 0
    # Counts tokens against the tenant's quota as they are used (set when a quota applies).
    charge_tokens: Callable[[int], None] | None = None
    status: int = 0
    started: float = field(default_factory=time.perf_counter)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0  # prompt tokens found in the engine's prefix cache
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
        """Who stored objects belong to: the tenant when one is named, else the API key's id,
        else the token's or certificate's identity, or `anonymous` on an open server."""
        if self.tenant:
            return f"tenant:{self.tenant}"
        if self.key_id:
            return f"key:{self.key_id}"
        return f"user:{self.identity}" if self.identity else "anonymous"

    def use_tokens(self, tokens: int) -> None:
        """Prompt or completion tokens this request has used (its tenant's quota counts them)."""
        if self.charge_tokens is not None:
            self.charge_tokens(tokens)


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
