"""How this server signs in to a PACS: none, basic or bearer from a mounted file, or `forward`,
where each caller's X-DICOMweb-Authorization header goes to the PACS unchanged, so the PACS's
own access control decides what each user may see.

Credentials never reach a log or a message; the forwarded one is hashed into cache keys only.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lingshu_server.core import request_context

AuthMode = Literal["none", "basic", "bearer", "forward"]
FORWARD_HEADER = "X-DICOMweb-Authorization"

# The caller's X-DICOMweb-Authorization header, set per request by the HTTP layer
# (http/pacs_forwarding.py).
_forwarded: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "lingshu_dicomweb_forwarded", default=None
)


@contextlib.contextmanager
def forwarding(credential: str | None) -> Iterator[None]:
    """The caller's credential for `forward` PACS auth, while one request is answered."""
    token = _forwarded.set(credential)
    try:
        yield
    finally:
        _forwarded.reset(token)


def forwarded_credential() -> str | None:
    return _forwarded.get()


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

    @classmethod
    def parse(cls, entry: str) -> PacsAuth:
        """'none', 'forward', 'basic:FILE' or 'bearer:FILE' (checked by Settings)."""
        mode, _, path = entry.partition(":")
        match mode:
            case "basic" | "bearer":
                return cls(mode, _SecretFile(Path(path)))
            case "none" | "forward":
                return cls(mode)
        raise ValueError(f"dicomweb_auth entry {entry!r} is not one Settings accepts")

    def header(self) -> str | None:
        """The Authorization header to send to the PACS, if any."""
        if self.mode == "forward":
            return _forwarded.get()
        if self.secret is None:
            return None
        secret = self.secret.read()
        if self.mode == "basic":  # the file holds user:password, as curl -u takes it
            return "Basic " + base64.b64encode(secret.encode()).decode("ascii")
        return f"Bearer {secret}"

    def caller(self) -> tuple[str, str]:
        """Who is asking, as far as what they may see can differ: the API key id (or token
        subject, or client certificate), and with `forward` a hash of the credential they
        forwarded. Part of every cache key."""
        ctx = request_context.get()
        key = (ctx.identity or ctx.key_id if ctx is not None else None) or ""
        forwarded = _forwarded.get() if self.mode == "forward" else None
        digest = hashlib.sha256(forwarded.encode("latin-1")).hexdigest() if forwarded else ""
        return key, digest
