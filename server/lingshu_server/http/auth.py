"""API keys: from an env variable and/or a mounted file (re-read when it changes), checked in
constant time from `Authorization: Bearer`. Logs name a key by a short id, never the key."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import threading
import time
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from lingshu_server.core import request_context
from lingshu_server.core.errors import AuthenticationError
from lingshu_server.core.settings import Settings
from lingshu_server.http.error_handlers import send_api_error

logger = logging.getLogger(__name__)


def key_id(key: str) -> str:
    """A short, stable, non-reversible name for a key, safe to log."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def _parse_keys(text: str, separator: str | None) -> list[str]:
    lines = text.split(separator) if separator else text.splitlines()
    keys = []
    for line in lines:
        key = line.strip()
        if key and not key.startswith("#"):
            keys.append(key)
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
        self._file_keys: list[str] = []
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

    def keys(self) -> list[str]:
        now = time.monotonic()
        if now - self._checked_at >= self._check_interval:
            self._checked_at = now
            self._refresh()
        return self._inline + self._file_keys

    def match(self, presented: str) -> str | None:
        """The key id if `presented` is a valid key. Compares against every key, each in
        constant time, so timing reveals neither which key nor how much of one matched."""
        presented_bytes = presented.encode()
        found = None
        for key in self.keys():
            if hmac.compare_digest(key.encode(), presented_bytes):
                found = key
        return key_id(found) if found is not None else None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def insecure_listen_reason(settings: Settings) -> str | None:
    """Why the server must not start as configured, or None."""
    has_keys = bool(settings.api_keys) or settings.api_key_file is not None
    if has_keys or settings.allow_unauthenticated or is_loopback(settings.host):
        return None
    return (
        f"refusing to listen on {settings.host} without API keys: set --api-key-file "
        "(LINGSHU_API_KEY_FILE) or --api-keys, or pass --allow-unauthenticated explicitly"
    )


def authenticate(store: ApiKeyStore, authorization: str) -> str:
    """The key id for an `Authorization` header value, or AuthenticationError."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
        )
    found = store.match(token.strip())
    if found is None:
        raise AuthenticationError("Incorrect API key provided.")
    return found


class ApiKeyMiddleware:
    """Checks the API key from the request's headers alone, before a byte of the body is read:
    a keyless client costs no memory and gets a 401 even for a malformed or huge body. Every
    path needs a key except `public_paths` (probes, metrics, docs)."""

    def __init__(self, app: ASGIApp, store: ApiKeyStore, public_paths: frozenset[str]):
        self.app = app
        self.store = store
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.store.enabled or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        header = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
                break
        try:
            found = authenticate(self.store, header.decode("latin-1"))
        except AuthenticationError as exc:
            # The body stays unread; uvicorn discards it as it arrives, without buffering it.
            await send_api_error(send, exc)
            return
        ctx = request_context.get()
        if ctx is not None:
            ctx.key_id = found
        await self.app(scope, receive, send)


bearer_scheme = HTTPBearer(
    auto_error=False,
    description="An API key from --api-keys or --api-key-file, as `Authorization: Bearer <key>`"
    " (not needed when the server runs without keys).",
)


async def require_api_key(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> str | None:
    """FastAPI dependency for /v1 that puts the bearer scheme in the OpenAPI document. The key
    was checked by ApiKeyMiddleware before the body was read; this only hands on its id."""
    store: ApiKeyStore = request.app.state.api_keys
    ctx = request_context.get()
    key = ctx.key_id if ctx is not None else None
    if store.enabled and key is None:  # the middleware is missing: refuse, never serve
        raise AuthenticationError("Incorrect API key provided.")
    return key
