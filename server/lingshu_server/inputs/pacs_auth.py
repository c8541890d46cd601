"""How this server signs in to a PACS (or a FHIR server): none, basic or bearer from a mounted
file, or `forward`, where each caller's X-DICOMweb-Authorization (X-FHIR-Authorization) header
goes to the remote system unchanged, so its own access control decides what each user may do.

Credentials never reach a log or a message; the forwarded one is hashed into cache keys only.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lingshu_server.core import request_context
from lingshu_server.core.errors import InvalidRequestError

AuthMode = Literal["none", "basic", "bearer", "forward"]
FORWARD_HEADER = "X-DICOMweb-Authorization"
FHIR_FORWARD_HEADER = "X-FHIR-Authorization"
_MAX_CREDENTIAL = 8192


@dataclass(frozen=True)
class Forwarding:
    """Where `forward` auth finds the caller's credential, and the code of a malformed one."""

    header: str
    invalid_code: str


DICOMWEB_FORWARDING = Forwarding(FORWARD_HEADER, "dicomweb_unauthorized")
FHIR_FORWARDING = Forwarding(FHIR_FORWARD_HEADER, "fhir_unauthorized")

# The caller's forwarded credentials (header name -> value), set per request by the HTTP layer
# (http/pacs_forwarding.py).
_forwarded: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "lingshu_forwarded_credentials", default=None
)


@contextlib.contextmanager
def forwarding(credentials: Mapping[str, str]) -> Iterator[None]:
    """The caller's credentials for `forward` auth (by header name), while one request is
    answered."""
    token = _forwarded.set(credentials)
    try:
        yield
    finally:
        _forwarded.reset(token)


def forwarded_credential(header: str = FORWARD_HEADER) -> str | None:
    credentials = _forwarded.get()
    return credentials.get(header) if credentials is not None else None


class PacsCredentialsError(Exception):
    """A PACS credentials file cannot be read at start-up (the server does not start)."""


class _SecretFile:
    """A credential in a mounted file, re-read when it changes (so Secrets rotate)."""

    def __init__(self, path: Path):
        self._path = path
        self._stamp: tuple[float, int] | None = None
        self._value = ""
        self.read()  # an unreadable file stops the server at start, not at the first request

    def read(self) -> str:
        try:
            info = os.stat(self._path)
            stamp = (info.st_mtime, info.st_size)
            if stamp != self._stamp:
                self._value, self._stamp = self._path.read_text(encoding="utf-8").strip(), stamp
        except OSError as exc:
            if self._stamp is None:
                raise PacsCredentialsError(
                    f"cannot read the PACS credentials file {self._path}: "
                    f"{exc.strerror or type(exc).__name__}"
                ) from None
            # keep the last credential read: a Secret being swapped is briefly absent
        return self._value


@dataclass(frozen=True)
class PacsAuth:
    mode: AuthMode
    secret: _SecretFile | None = None
    forwarding: Forwarding = DICOMWEB_FORWARDING

    @classmethod
    def parse(cls, entry: str, forwarding: Forwarding = DICOMWEB_FORWARDING) -> PacsAuth:
        """'none', 'forward', 'basic:FILE' or 'bearer:FILE' (checked by Settings)."""
        mode, _, path = entry.partition(":")
        match mode:
            case "basic" | "bearer":
                return cls(mode, _SecretFile(Path(path)), forwarding)
            case "none" | "forward":
                return cls(mode, None, forwarding)
        raise ValueError(f"auth entry {entry!r} is not one Settings accepts")

    @property
    def forwarded(self) -> str | None:
        """The caller's credential, with `forward` auth."""
        return forwarded_credential(self.forwarding.header) if self.mode == "forward" else None

    def header(self) -> str | None:
        """The Authorization header to send to the remote system, if any (a 400 when the
        caller forwarded something that is not an Authorization value)."""
        if self.mode == "forward":
            credential = self.forwarded
        elif self.secret is None:
            return None
        elif self.mode == "basic":  # the file holds user:password, as curl -u takes it
            credential = "Basic " + base64.b64encode(self.secret.read().encode()).decode("ascii")
        else:
            credential = f"Bearer {self.secret.read()}"
        if credential is not None and (
            len(credential) > _MAX_CREDENTIAL or not credential.isprintable()
        ):
            raise InvalidRequestError(
                f"the {self.forwarding.header} header is not a valid Authorization value",
                code=self.forwarding.invalid_code,
            )
        return credential

    def credentials_used(self, system: str) -> str:
        """Which credentials went to `system` ("PACS", "FHIR server"), for a refusal's message."""
        if self.mode == "none":
            return "no credentials (this server is configured to send none to it)"
        if self.mode != "forward":
            return "the credentials this server is configured with"
        header = self.forwarding.header
        if self.forwarded is None:
            return f"no credentials: send your {system} credentials in the {header} header"
        return f"the credentials sent in {header}"

    def caller(self) -> tuple[str, str]:
        """Who is asking, as far as what they may see can differ: the API key id (or token
        subject, or client certificate), and with `forward` a hash of the credential they
        forwarded. Part of every cache key."""
        ctx = request_context.get()
        key = (ctx.identity or ctx.key_id if ctx is not None else None) or ""
        forwarded = self.forwarded
        digest = hashlib.sha256(forwarded.encode("latin-1")).hexdigest() if forwarded else ""
        return key, digest
