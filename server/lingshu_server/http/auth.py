"""Who is calling: API keys (from an env variable and/or a mounted file, re-read when it
changes, checked in constant time), OpenID Connect access tokens (http/oidc_tokens.py) and
client certificates (http/tls.py), all from the request's headers and connection. Logs name a
key by a short id and a token by its issuer and subject, never the credential."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from lingshu_server.core import request_context
from lingshu_server.core.errors import APIError, AuthenticationError, PermissionDeniedError
from lingshu_server.core.identity_settings import has_credentials, is_loopback_host
from lingshu_server.core.settings import Settings
from lingshu_server.http.error_handlers import send_api_error
from lingshu_server.http.oidc_tokens import TokenVerifier, looks_like_jwt

METRICS_PATH = "/metrics"

logger = logging.getLogger(__name__)


def key_id(key: str) -> str:
    """A short, stable, non-reversible name for a key, safe to log."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class ApiKey:
    key: str
    tenant: str | None


def _parse_keys(text: str, separator: str | None) -> list[ApiKey]:
    """One key per entry, optionally followed by `tenant=NAME`; blanks and # comments skipped."""
    lines = text.split(separator) if separator else text.splitlines()
    keys = []
    for line in lines:
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        tenant = None
        for word in words[1:]:
            name, _, value = word.partition("=")
            if name == "tenant" and value:
                tenant = value
        keys.append(ApiKey(words[0], tenant))
    return keys


# The key file is looked at (a stat) at most this often: not on every request's event loop turn.
KEY_FILE_CHECK_INTERVAL_S = 1.0


class ApiKeyStore:
    """The accepted keys; the file is re-read when its mtime or size changes (seen within
    KEY_FILE_CHECK_INTERVAL_S)."""

    def __init__(
        self,
        inline: str | None,
        path: Path | None,
        check_interval: float = KEY_FILE_CHECK_INTERVAL_S,
    ):
        self._inline = _parse_keys(inline, ",") if inline else []
        self._path = path
        self._file_keys: list[ApiKey] = []
        self._stamp: tuple[float, int] | None = None
        self._lock = threading.Lock()
        self._check_interval = check_interval
        self._checked_at = time.monotonic()
        self._refresh()

    @property
    def enabled(self) -> bool:
        return bool(self._inline) or self._path is not None

    def _refresh(self) -> None:
        if self._path is None:
            return
        try:
            stat = os.stat(self._path)
        except OSError:
            if self._stamp is not None:
                logger.warning("API key file is gone; keeping the keys read last")
            return
        stamp = (stat.st_mtime, stat.st_size)
        with self._lock:
            if stamp == self._stamp:
                return
            try:
                keys = _parse_keys(self._path.read_text(encoding="utf-8"), None)
            except OSError as exc:
                logger.warning("cannot read the API key file: %s", type(exc).__name__)
                return
            self._file_keys, self._stamp = keys, stamp
        logger.info("API key file loaded", extra={"fields": {"keys": len(keys)}})

    def keys(self) -> list[ApiKey]:
        now = time.monotonic()
        if now - self._checked_at >= self._check_interval:
            self._checked_at = now
            self._refresh()
        return self._inline + self._file_keys

    def match(self, presented: str) -> str | None:
        """The key id if `presented` is a valid key."""
        found = self.lookup(presented)
        return found[0] if found is not None else None

    def lookup(self, presented: str) -> tuple[str, str | None] | None:
        """The key id and tenant if `presented` is a valid key. Compares against every key,
        each in constant time, so timing reveals neither which key nor how much of one
        matched."""
        presented_bytes = presented.encode()
        found = None
        for entry in self.keys():
            if hmac.compare_digest(entry.key.encode(), presented_bytes):
                found = entry
        return (key_id(found.key), found.tenant) if found is not None else None


is_loopback = is_loopback_host


def insecure_listen_reason(settings: Settings) -> str | None:
    """Why the server must not start as configured, or None."""
    if has_credentials(settings) or settings.allow_unauthenticated or is_loopback(settings.host):
        return None
    return (
        f"refusing to listen on {settings.host} without API keys: set --api-key-file "
        "(LINGSHU_API_KEY_FILE), --api-keys, --oidc-issuers or --tls-client-auth, or pass "
        "--allow-unauthenticated explicitly"
    )


@dataclass(frozen=True)
class Caller:
    """Who a request comes from, as the logs and quotas name it (never the credential)."""

    identity: str
    tenant: str | None
    key_id: str | None = None
    by_token: bool = False


NO_CREDENTIAL = "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."


class Authenticator:
    """API keys, OpenID Connect tokens and client certificates, each where configured."""

    def __init__(
        self,
        *,
        keys: ApiKeyStore,
        tokens: TokenVerifier | None,
        client_certs: bool,
        tenant_attribute: str | None,
    ):
        self.keys = keys
        self.tokens = tokens
        self.client_certs = client_certs
        self.tenant_attribute = tenant_attribute

    @property
    def enabled(self) -> bool:
        return self.keys.enabled or self.tokens is not None or self.client_certs

    async def caller(
        self, authorization: str, tls: dict[str, Any] | None, roles: frozenset[str]
    ) -> Caller:
        """The caller of a request from its `Authorization` header (a key or a token) or,
        without one, its verified client certificate; AuthenticationError if none is valid,
        PermissionDeniedError for a token without all of `roles`."""
        if not authorization:
            found = self._certificate(tls)
            if found is None:
                raise AuthenticationError(NO_CREDENTIAL)
            return found
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise AuthenticationError(NO_CREDENTIAL)
        if self.tokens is not None and looks_like_jwt(credential):
            token = await self.tokens.verify(credential)
            if not roles <= token.roles:
                raise PermissionDeniedError(
                    "The token lacks a role this route requires (at claim "
                    f"'{self.tokens.roles_claim}')."
                )
            return Caller(token.name, token.tenant, by_token=True)
        found_key = self.keys.lookup(credential) if self.keys.enabled else None
        if found_key is None:
            raise AuthenticationError("Incorrect API key provided.")
        return Caller(found_key[0], found_key[1], key_id=found_key[0])

    def _certificate(self, tls: dict[str, Any] | None) -> Caller | None:
        if not self.client_certs or not tls or not tls.get("client_cert_name"):
            return None
        tenant = None
        if self.tenant_attribute is not None:
            values = tls["client_cert_subject"].get(self.tenant_attribute) or [None]
            tenant = values[0]
        return Caller(f"cert:{tls['client_cert_name']}", tenant)


def _header(scope: Scope, wanted: bytes) -> str:
    for name, value in scope["headers"]:
        if name == wanted:
            return value.decode("latin-1")
    return ""


class AuthMiddleware:
    """Checks the caller from the request's headers (and TLS connection) alone, before a byte
    of the body is read: a caller without a credential costs no memory and gets a 401 even for
    a malformed or huge body. Every path needs a credential except `public_paths` (probes,
    the playground page, docs); /metrics as `metrics_auth` says."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        public_paths: frozenset[str],
        api_roles: frozenset[str] = frozenset(),
        metrics_auth: str = "open",
        metrics_role: str | None = None,
    ):
        self.app = app
        self.authenticator = authenticator
        self.public_paths = public_paths | ({METRICS_PATH} if metrics_auth == "open" else set())
        self.api_roles = api_roles
        self.metrics_by_token = metrics_auth == "token"
        self.metrics_roles = frozenset({metrics_role} if metrics_role else ())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.authenticator.enabled
            or scope["path"] in self.public_paths
        ):
            await self.app(scope, receive, send)
            return
        tls = scope.get("extensions", {}).get("tls")
        for_metrics = scope["path"] == METRICS_PATH and self.metrics_by_token
        roles = self.metrics_roles if for_metrics else self.api_roles
        try:
            caller = await self.authenticator.caller(_header(scope, b"authorization"), tls, roles)
            if for_metrics and not caller.by_token:
                raise PermissionDeniedError("/metrics needs a token with the metrics role.")
        except APIError as exc:
            # The body stays unread; uvicorn discards it as it arrives, without buffering it.
            await send_api_error(send, exc)
            return
        ctx = request_context.get()
        if ctx is not None:
            ctx.key_id, ctx.identity, ctx.tenant = caller.key_id, caller.identity, caller.tenant
        await self.app(scope, receive, send)


bearer_scheme = HTTPBearer(
    auto_error=False,
    description="An API key from --api-keys or --api-key-file, or an access token of an "
    "accepted OpenID Connect issuer, as `Authorization: Bearer <key or token>` (not needed "
    "when the server runs without credentials).",
)


async def require_api_key(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> str | None:
    """FastAPI dependency for /v1 that puts the bearer scheme in the OpenAPI document. The
    caller was checked by AuthMiddleware before the body was read; this only hands on who."""
    authenticator: Authenticator = request.app.state.authenticator
    ctx = request_context.get()
    identity = ctx.identity if ctx is not None else None
    if authenticator.enabled and identity is None:  # the middleware is missing: refuse
        raise AuthenticationError("Incorrect API key provided.")
    return identity
