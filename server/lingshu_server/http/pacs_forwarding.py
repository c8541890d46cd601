"""The caller's X-DICOMweb-Authorization header, handed to `forward` PACS auth per request."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from lingshu_server.inputs.pacs_auth import FORWARD_HEADER, forwarding


class ForwardedCredentialMiddleware:
    """Makes the caller's X-DICOMweb-Authorization header available to `forward` PACS auth."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = dict(scope["headers"]).get(FORWARD_HEADER.lower().encode())
        with forwarding(raw.decode("latin-1") if raw is not None else None):
            await self.app(scope, receive, send)
