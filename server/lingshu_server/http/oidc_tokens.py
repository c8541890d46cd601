"""JWT access tokens from the accepted OpenID Connect issuers, checked with joserfc.

The order keeps a forged token cheap: the header's algorithm must be an accepted asymmetric one
and the unverified `iss` an accepted issuer before any key is looked up (so no token makes the
server contact a provider it was not told about); then the signature with that issuer's key for
the header's `kid`; then `iss`, `aud`, `exp`, `nbf` and `iat` (with a small leeway); then the
roles. Messages never quote the token or its claims.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    JoseError,
    MissingClaimError,
)

from lingshu_server.core.errors import InvalidTokenError, PermissionDeniedError
from lingshu_server.core.settings import Settings
from lingshu_server.http.oidc_keys import SigningKeys


@dataclass(frozen=True)
class TokenIdentity:
    issuer: str
    subject: str
    tenant: str | None
    roles: frozenset[str]

    @property
    def name(self) -> str:
        return f"{self.issuer}#{self.subject}"


def looks_like_jwt(credential: str) -> bool:
    """A JWS in compact form (three base64url parts, a JSON header): not an API key."""
    return credential.count(".") == 2 and credential.startswith("eyJ")


def claim_at(claims: dict[str, Any], path: str) -> Any:
    """The claim at a dotted path (`realm_access.roles`), or None."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def claim_strings(value: Any) -> list[str]:
    """A claim as a list of strings: a space-separated string (`scope`) or a list of them."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


class TokenVerifier:
    def __init__(self, settings: Settings, keys: SigningKeys):
        self.keys = keys
        self.audiences = list(settings.oidc_audiences)
        self.algorithms = frozenset(settings.oidc_algorithms)
        self.leeway = int(settings.oidc_leeway)
        self.roles_claim = settings.oidc_roles_claim
        self.tenant_claim = settings.oidc_tenant_claim

    async def verify(self, token: str) -> TokenIdentity:
        """The identity and roles of a valid token; InvalidTokenError (401), or
        PermissionDeniedError (403) for a valid token that names no tenant."""
        try:
            compact = jws.extract_compact(token.encode("ascii"))
            header = compact.headers()
            unverified = json.loads(compact.payload)
        except (JoseError, ValueError, UnicodeError):
            raise InvalidTokenError("The bearer token is not a well-formed JWT.") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidTokenError(
                "The token's signing algorithm is not accepted (asymmetric algorithms only)."
            )
        claimed = unverified.get("iss") if isinstance(unverified, dict) else None
        issuer = self.keys.issuers.get(claimed) if isinstance(claimed, str) else None
        if issuer is None:
            raise InvalidTokenError("The token's issuer is not accepted by this server.")
        kid = header.get("kid")
        key = await issuer.key_for(kid if isinstance(kid, str) else None, alg)
        if key is None:
            raise InvalidTokenError("The token's signing key is not one of its issuer's keys.")
        try:
            claims = jwt.decode(token, key, algorithms=[alg]).claims
            jwt.JWTClaimsRegistry(
                leeway=self.leeway,
                iss={"essential": True, "value": issuer.issuer},
                aud={"essential": True, "values": self.audiences},
                exp={"essential": True},
                sub={"essential": True},
            ).validate(claims)
        except ExpiredTokenError:
            raise InvalidTokenError("The token has expired.") from None
        except JoseError as exc:
            raise InvalidTokenError(f"The token is not valid ({_reason(exc)}).") from None
        roles = frozenset(claim_strings(claim_at(claims, self.roles_claim)))
        return TokenIdentity(issuer.issuer, str(claims["sub"]), self._tenant(claims), roles)

    def _tenant(self, claims: dict[str, Any]) -> str | None:
        if self.tenant_claim is None:
            return None
        values = claim_strings(claim_at(claims, self.tenant_claim))
        if not values:
            raise PermissionDeniedError(f"The token names no tenant (claim '{self.tenant_claim}').")
        return values[0]


_CLAIM_REASONS = {
    "aud": "audience not accepted",
    "iss": "issuer not accepted",
    "nbf": "not yet valid",
    "iat": "issued in the future",
}


def _reason(exc: JoseError) -> str:
    """Which check failed, in words that hold nothing from the token."""
    if isinstance(exc, MissingClaimError):
        return f"missing claim '{exc.claim}'"
    if isinstance(exc, ClaimError):
        return _CLAIM_REASONS.get(exc.claim, f"claim '{exc.claim}'")
    return "bad signature" if isinstance(exc, BadSignatureError) else exc.error or "invalid"
