"""HTTPS served natively, with client certificates (mutual TLS), reloaded without a restart.

The listening socket keeps one SSLContext for its life, so the one handed to it only delegates:
each new connection is wrapped by the current context, built again from the files when one of
them changes (looked at, a stat of each, at most once a second). Connections already open keep
the context they began with. A half-written or broken file is logged and the previous context
kept. A verified client certificate's subject is handed to the app as the ASGI TLS extension
(`scope["extensions"]["tls"]`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.x509.oid import NameOID

from lingshu_server.core.settings import Settings

logger = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0
_CLIENT_AUTH = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
SUBJECT_ATTRIBUTES = {
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
}


class TlsFiles:
    """The certificate, key and client CA files, and the context built from them."""

    def __init__(
        self,
        *,
        cert: Path,
        key: Path,
        client_ca: Path | None,
        client_auth: str,
        check_interval: float = CHECK_INTERVAL_S,
    ):
        self.paths = [path for path in (cert, key, client_ca) if path is not None]
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self.client_auth = _CLIENT_AUTH[client_auth]
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._checked_at = time.monotonic()
        self._context = self._build()  # at start-up a broken file is an error, not a warning

    def _stat(self) -> tuple[tuple[float, int], ...]:
        stamps = []
        for path in self.paths:
            try:
                stat = os.stat(path)
            except OSError:
                stamps.append((0.0, -1))
            else:
                stamps.append((stat.st_mtime, stat.st_size))
        return tuple(stamps)

    def _build(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        if self.client_ca is not None:
            context.load_verify_locations(cafile=self.client_ca)
        context.verify_mode = self.client_auth
        context.set_alpn_protocols(["http/1.1"])
        return context

    def current(self) -> ssl.SSLContext:
        now = time.monotonic()
        if now - self._checked_at < self.check_interval:
            return self._context
        with self._lock:
            self._checked_at = now
            stamp = self._stat()
            if stamp != self._stamp:
                try:
                    self._context = self._build()
                except (OSError, ssl.SSLError, ValueError) as exc:
                    logger.warning(
                        "TLS files changed but cannot be loaded; keeping the previous ones: %s",
                        type(exc).__name__,
                    )
                else:
                    logger.info("TLS certificate files reloaded")
                self._stamp = stamp
            return self._context


class ReloadingContext(ssl.SSLContext):
    """What the listening socket holds: it wraps each connection with `files.current()`."""

    files: TlsFiles

    def __new__(cls, files: TlsFiles) -> ReloadingContext:
        context = super().__new__(cls, ssl.PROTOCOL_TLS_SERVER)
        context.files = files
        return context

    def __init__(self, files: TlsFiles):  # SSLContext takes the protocol in __new__ alone
        pass

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        return self.files.current().wrap_bio(*args, **kwargs)


def client_certificate(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    """The ASGI TLS extension for a connection: the verified client certificate's subject
    (RFC 4514 text and its CN, O and OU values), or None on plain HTTP or without one."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return {"client_cert_name": None, "client_cert_subject": {}}
    subject = x509.load_der_x509_certificate(der).subject
    attributes = {
        name: [str(a.value) for a in subject.get_attributes_for_oid(oid)]
        for name, oid in SUBJECT_ATTRIBUTES.items()
    }
    return {"client_cert_name": subject.rfc4514_string(), "client_cert_subject": attributes}


def tls_context_factory(
    settings: Settings,
) -> Callable[[uvicorn.Config, Callable[[], ssl.SSLContext]], ssl.SSLContext] | None:
    """uvicorn's `ssl_context_factory` for --tls-cert-file (None: plain HTTP)."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    files = TlsFiles(
        cert=settings.tls_cert_file,
        key=settings.tls_key_file,
        client_ca=settings.tls_ca_file,
        client_auth=settings.tls_client_auth,
    )
    return lambda config, default: ReloadingContext(files)
