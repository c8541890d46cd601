"""GET /playground: the clinician's playground, one static page (its CSS and script inline, no
external asset, no build step), so it works on an air-gapped hospital network.

The page is public: it is the same for everyone and holds no data. Every API call it makes
(`/v1/models`, `/v1/images/preview`, `/v1/chat/completions`, `/v1/reports`) carries the key
typed into it,
or the access token the page got by signing in through the identity provider (authorization
code with PKCE), which stays in the tab's sessionStorage. It is served with a strict
Content-Security-Policy: only its own script and style run (pinned by their SHA-256), no eval,
API calls to this origin only (and the provider's token endpoint when sign-in is configured),
images and clips from data: and blob: URLs (the user's own file, the server's preview),
no framing, no forms posted anywhere.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from lingshu_server.http.identity import playground_sign_in

PAGE = "playground.html"

playground = APIRouter()


@dataclass(frozen=True)
class StaticPage:
    html: str
    headers: dict[str, str]


def _hashes(html: str, tag: str) -> str:
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    digests = (hashlib.sha256(block.encode()).digest() for block in blocks)
    return " ".join(f"'sha256-{base64.b64encode(digest).decode()}'" for digest in digests)


def content_security_policy(html: str, connect: str = "") -> str:
    """`connect` adds an origin the page may call: the identity provider's token endpoint."""
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src {_hashes(html, 'script')}",
            f"style-src {_hashes(html, 'style')}",
            "img-src data: blob:",
            "media-src blob:",
            f"connect-src 'self'{' ' + connect if connect else ''}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


@cache
def playground_page() -> StaticPage:
    html = files("lingshu_server.http").joinpath(PAGE).read_text(encoding="utf-8")
    return StaticPage(
        html,
        {
            "Content-Security-Policy": content_security_policy(html),
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )


@playground.get("/playground", include_in_schema=False)
async def playground_route(request: Request) -> HTMLResponse:
    page = playground_page()
    sign_in = await playground_sign_in(request.app)
    if sign_in is None:
        return HTMLResponse(page.html, headers=page.headers)
    csp = content_security_policy(page.html, sign_in.token_origin)
    return HTMLResponse(page.html, headers={**page.headers, "Content-Security-Policy": csp})


@playground.get("/playground/sign-in", include_in_schema=False)
async def playground_sign_in_route(request: Request) -> JSONResponse:
    """The provider's endpoints and the public client the page signs in with (public facts,
    no secret); `sign_in` false when not configured or the provider cannot be reached."""
    sign_in = await playground_sign_in(request.app)
    if sign_in is None:
        return JSONResponse({"sign_in": False})
    return JSONResponse({"sign_in": True, **dataclasses.asdict(sign_in)})
