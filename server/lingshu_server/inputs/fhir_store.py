"""A report's FHIR Bundle POSTed, as a transaction, to a configured FHIR server (`POST [base]`,
FHIR R4's transaction interaction), signed in as the PACS's reads are: a credentials file, or
the caller's own X-FHIR-Authorization header with `forward`.

Only the base URLs in --fhir-urls are destinations; a request naming another is refused before
anything is generated. A server that takes the Bundle answers 200 with a `transaction-response`
Bundle (each entry's `response.location` says where a resource went); one that refuses it
answers 4xx with an OperationOutcome, whose issues the caller is told. Nothing here logs the
Bundle or a credential; messages name the server by host:port.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter

from lingshu_server.core.errors import (
    FhirRefusedError,
    FhirTimeoutError,
    FhirUnavailableError,
    InvalidRequestError,
)
from lingshu_server.core.settings import Settings
from lingshu_server.inputs.pacs_auth import FHIR_FORWARDING, PacsAuth
from lingshu_server.inputs.pacs_client import (
    host_label,
    private_http_client,
    retry_after_seconds,
)

FHIR_JSON = "application/fhir+json"
OUTCOMES = ("stored", "refused", "unavailable", "timeout")
CONNECT_TIMEOUT_S = 5.0
_MAX_ANSWER_BYTES = 1024 * 1024
_MAX_ISSUES_CHARS = 400


@dataclass(frozen=True)
class FhirServer:
    """One configured FHIR base URL and how to sign in to it."""

    base: httpx.URL
    auth: PacsAuth

    @property
    def label(self) -> str:
        return host_label(self.base)

    @property
    def url(self) -> str:
        """The base URL without a trailing slash: where a transaction is POSTed."""
        return str(self.base).rstrip("/")


@dataclass(frozen=True)
class FhirStored:
    server: str  # host:port
    locations: list[str]  # each entry's response.location, in the Bundle's order


def _same_base(a: httpx.URL, b: httpx.URL) -> bool:
    return (a.scheme, a.host, a.port, a.path.rstrip("/")) == (
        b.scheme,
        b.host,
        b.port,
        b.path.rstrip("/"),
    )


def outcome_issues(body: Any) -> str | None:
    """An OperationOutcome's issues, as a person reads them: `error invalid: diagnostics`."""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return None
    issues = [issue for issue in body.get("issue") or [] if isinstance(issue, dict)]
    said = []
    for issue in issues:
        details = issue.get("details")
        text = issue.get("diagnostics") or (
            details.get("text") if isinstance(details, dict) else None
        )
        head = " ".join(str(issue.get(key)) for key in ("severity", "code") if issue.get(key))
        said.append(f"{head}: {text}" if isinstance(text, str) and text else head)
    text = "; ".join(item for item in said if item)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    if len(text) > _MAX_ISSUES_CHARS:
        text = text[: _MAX_ISSUES_CHARS - 1] + "…"
    return text or None


def transaction_locations(body: Any) -> list[str] | None:
    """The `response.location` of each entry of a transaction-response Bundle; None when the
    body is not one, or an entry did not succeed."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        return None
    if body.get("type") != "transaction-response":
        return None
    locations = []
    for entry in body.get("entry") or []:
        response = entry.get("response") if isinstance(entry, dict) else None
        status = response.get("status") if isinstance(response, dict) else None
        if not isinstance(status, str) or not status.startswith("2"):
            return None
        location = response.get("location") if isinstance(response, dict) else None
        locations.append(location if isinstance(location, str) else "")
    return locations


class FhirServers:
    """The configured FHIR servers, and the one HTTP client that posts Bundles to them."""

    def __init__(
        self, *, servers: Sequence[FhirServer], timeout_s: float, registry: CollectorRegistry
    ):
        self._servers = tuple(servers)
        self._timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None
        self.posts = Counter(
            "lingshu_fhir_bundles",
            "Report Bundles posted to a FHIR server, by outcome (stored, refused, "
            "unavailable, timeout).",
            ["outcome"],
            registry=registry,
        )
        for outcome in OUTCOMES:
            self.posts.labels(outcome)

    @classmethod
    def from_settings(cls, settings: Settings, registry: CollectorRegistry) -> FhirServers:
        auths = [PacsAuth.parse(entry, FHIR_FORWARDING) for entry in settings.fhir_auth]
        if len(auths) == 1:
            auths *= len(settings.fhir_urls)
        servers = [
            FhirServer(httpx.URL(url.strip()), auth)
            for url, auth in zip(settings.fhir_urls, auths, strict=True)
        ]
        return cls(servers=servers, timeout_s=settings.fhir_timeout, registry=registry)

    @property
    def forwards_credentials(self) -> bool:
        return any(server.auth.mode == "forward" for server in self._servers)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def match(self, url: str, param: str) -> FhirServer:
        """The configured server a request's FHIR URL names (a 400 for any other URL)."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            parsed = None
        found = next(
            (s for s in self._servers if parsed is not None and _same_base(s.base, parsed)), None
        )
        if found is None:
            configured = "is none of" if self._servers else "cannot be one: there are no"
            raise InvalidRequestError(
                f"the FHIR URL {configured} this server's --fhir-urls (Bundles are posted to "
                "configured FHIR base URLs only)",
                param=param,
                code="fhir_url_not_allowed",
            )
        return found

    async def post_transaction(self, server: FhirServer, bundle: bytes) -> FhirStored:
        """POST a transaction Bundle (JSON bytes) to the server; its answer or an API error."""
        headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
        credential = server.auth.header()
        if credential is not None:
            headers["Authorization"] = credential
        if self._client is None:
            self._client = private_http_client(
                self._timeout_s, min(CONNECT_TIMEOUT_S, self._timeout_s)
            )
        try:
            async with (
                asyncio.timeout(self._timeout_s),
                self._client.stream("POST", server.url, headers=headers, content=bundle) as answer,
            ):
                body = await _read_bounded(answer)
        except (TimeoutError, httpx.TimeoutException):
            self.posts.labels("timeout").inc()
            raise FhirTimeoutError(
                f"the FHIR server at {server.label} did not answer within {self._timeout_s:g} s",
                param="fhir_url",
                retry_after_s=5,
            ) from None
        except httpx.HTTPError:
            self.posts.labels("unavailable").inc()
            raise FhirUnavailableError(
                f"could not reach the FHIR server at {server.label} (connection refused, reset "
                "or not resolvable)",
                param="fhir_url",
            ) from None
        return self._outcome(server, answer, body)

    def _outcome(self, server: FhirServer, answer: httpx.Response, body: bytes) -> FhirStored:
        status = answer.status_code
        try:
            parsed = json.loads(body) if body.strip() else None
        except ValueError:
            parsed = None
        if status == HTTPStatus.TOO_MANY_REQUESTS or status >= 500:
            self.posts.labels("unavailable").inc()
            raise FhirUnavailableError(
                f"the FHIR server at {server.label} answered HTTP {status}"
                + _said(outcome_issues(parsed)),
                param="fhir_url",
                retry_after_s=retry_after_seconds(answer.headers.get("retry-after")),
            )
        locations = transaction_locations(parsed) if status == HTTPStatus.OK else None
        if locations is not None:
            self.posts.labels("stored").inc()
            return FhirStored(server=server.label, locations=locations)
        self.posts.labels("refused").inc()
        if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            whose = server.auth.credentials_used("FHIR server")
            reason = f"HTTP {status} with {whose}"
        elif answer.is_success:
            reason = f"HTTP {status} without a transaction-response Bundle"
        else:
            reason = f"HTTP {status}"
        raise FhirRefusedError(
            f"the FHIR server at {server.label} refused the Bundle ({reason})"
            + _said(outcome_issues(parsed)),
            param="fhir_url",
        )


def _said(issues: str | None) -> str:
    return f": {issues}" if issues else ""


async def _read_bounded(answer: httpx.Response) -> bytes:
    """The answer's body, up to what a transaction-response or an OperationOutcome needs."""
    body = bytearray()
    async for chunk in answer.aiter_bytes():
        body += chunk
        if len(body) > _MAX_ANSWER_BYTES:
            break
    return bytes(body[:_MAX_ANSWER_BYTES])
