"""The caller's X-DICOMweb-Authorization and X-FHIR-Authorization headers, handed to `forward`
auth (of a PACS, of a FHIR server) per request."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from lingshu_server.inputs.pacs_auth import forwarding


class ForwardedCredentialMiddleware:
    """Makes the caller's credential headers (by name) available to `forward` auth."""

    def __init__(self, app: ASGIApp, headers: tuple[str, ...]):
        self.app = app
        self._headers = {name.lower().encode(): name for name in headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        credentials = {
            self._headers[name]: value.decode("latin-1")
            for name, value in scope["headers"]
            if name in self._headers
        }
        with forwarding(credentials):
            await self.app(scope, receive, send)
