"""Each OpenID Connect issuer's signing keys: found through discovery, fetched, cached.

The keys (JWKS) are fetched at start-up and every `refresh_s` by a background task, and again
when a token names a key id the cache does not hold (a rotation), at most once per
`min_refresh_s` per issuer: a flood of tokens with forged key ids costs the provider one request
per interval, and requests arriving during a fetch wait for that one fetch. A provider that is
down or slow (each request is cut at `timeout_s`) leaves the cached keys in use.

Only public signature keys are kept: symmetric (`oct`) keys and keys for encryption are dropped,
so a token can never be checked with an HMAC over a public key (algorithm confusion).
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey

from lingshu_server.core.identity_settings import check_provider_url

logger = logging.getLogger(__name__)

PublicKey = RSAKey | ECKey | OKPKey
_KEY_TYPES: dict[str, type[PublicKey]] = {"RSA": RSAKey, "EC": ECKey, "OKP": OKPKey}
# Which key type signs with which algorithm (and, for EC, on which curve).
_ALG_KEYS: dict[str, tuple[str, str | None]] = {
    **{f"{family}{bits}": ("RSA", None) for family in ("RS", "PS") for bits in (256, 384, 512)},
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
    "Ed25519": ("OKP", "Ed25519"),
}
MAX_DOCUMENT_BYTES = 1024 * 1024


class ProviderError(Exception):
    """The provider did not answer as an OpenID provider would (logged, never shown)."""


def fits(key: PublicKey, alg: str) -> bool:
    """Whether `key` may check a signature made with `alg`."""
    kty, curve = _ALG_KEYS.get(alg, (None, None))
    if key.key_type != kty:
        return False
    if curve is not None and key.as_dict().get("crv") != curve:
        return False
    declared = key.get("alg")
    return declared is None or declared == alg


def public_signing_keys(document: Any) -> list[PublicKey]:
    """The usable keys of a JWKS document; anything else in it is skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ProviderError("the JWKS document has no `keys` list")
    keys = []
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        key_class = _KEY_TYPES.get(str(entry.get("kty")))
        if key_class is None:  # `oct` (a shared secret) or a type we do not know
            continue
        public = {name: value for name, value in entry.items() if name not in _PRIVATE_MEMBERS}
        try:
            keys.append(key_class.import_key(public))
        except (JoseError, ValueError, TypeError):
            continue
    return keys


# A provider that publishes private members by mistake: they are dropped, never used.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth"})


@dataclass
class IssuerKeys:
    issuer: str
    client: httpx.AsyncClient
    timeout_s: float
    min_refresh_s: float
    keys: list[PublicKey] = field(default_factory=list)
    discovery: dict[str, Any] = field(default_factory=dict)
    fetched_at: float | None = None
    _attempted_at: float = -math.inf
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def find(self, kid: str | None, alg: str) -> PublicKey | None:
        candidates = [key for key in self.keys if fits(key, alg)]
        if kid is None:  # only an issuer with a single key for the algorithm may omit it
            return candidates[0] if len(candidates) == 1 else None
        return next((key for key in candidates if key.kid == kid), None)

    async def key_for(self, kid: str | None, alg: str) -> PublicKey | None:
        """The key for a token's header, fetching the keys again if it is unknown (and the
        last fetch is older than `min_refresh_s`)."""
        found = self.find(kid, alg)
        if found is None and time.monotonic() - self._attempted_at >= self.min_refresh_s:
            await self.refresh(min_age_s=self.min_refresh_s)
            found = self.find(kid, alg)
        return found

    async def refresh(self, min_age_s: float = 0.0) -> bool:
        """Fetch the keys (discovery first, the first time); False when the provider failed."""
        async with self._lock:
            if time.monotonic() - self._attempted_at < min_age_s:
                return self.fetched_at is not None  # another request just fetched them
            self._attempted_at = time.monotonic()
            try:
                async with asyncio.timeout(self.timeout_s):
                    if not self.discovery:
                        self.discovery = await self._discover()
                    document = await self._get_json(self.discovery["jwks_uri"])
                keys = public_signing_keys(document)
            except (ProviderError, httpx.HTTPError, TimeoutError, ValueError) as exc:
                logger.warning(
                    "identity provider unavailable; keeping the cached signing keys",
                    extra={"fields": {"issuer": self.issuer, "error": type(exc).__name__}},
                )
                return False
            if {key.kid for key in keys} != {key.kid for key in self.keys}:
                logger.info(
                    "signing keys loaded",
                    extra={"fields": {"issuer": self.issuer, "keys": len(keys)}},
                )
            self.keys, self.fetched_at = keys, time.monotonic()
            return True

    async def _discover(self) -> dict[str, Any]:
        document = await self._get_json(
            self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        )
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise ProviderError("the discovery document names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise ProviderError("the discovery document has no jwks_uri")
        try:
            check_provider_url(jwks_uri, "jwks_uri")
        except ValueError as exc:
            raise ProviderError(str(exc)) from None
        return document

    async def _get_json(self, url: str) -> Any:
        response = await self.client.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        if len(response.content) > MAX_DOCUMENT_BYTES:
            raise ProviderError("document too large")
        return response.json()


class SigningKeys:
    """The signing keys of every accepted issuer, and the task that keeps them fresh."""

    def __init__(
        self,
        issuers: list[str],
        *,
        timeout_s: float,
        min_refresh_s: float,
        refresh_s: float,
        ca_file: Path | None = None,
    ):
        self.client = httpx.AsyncClient(
            timeout=timeout_s,
            verify=ssl.create_default_context(cafile=ca_file) if ca_file else True,
            follow_redirects=False,
            trust_env=False,
        )
        self.refresh_s = refresh_s
        self.issuers = {
            issuer: IssuerKeys(issuer, self.client, timeout_s, min_refresh_s) for issuer in issuers
        }

    async def keep_fresh(self) -> None:
        """Fetch every issuer's keys now and then every `refresh_s` (a background task)."""
        while True:
            await asyncio.gather(*(keys.refresh() for keys in self.issuers.values()))
            await asyncio.sleep(self.refresh_s)

    async def aclose(self) -> None:
        await self.client.aclose()
