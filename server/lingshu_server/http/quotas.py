"""Per-tenant quotas at the HTTP edge: admitted (or a 429) from the caller alone, before the
body is read; OpenAI's `x-ratelimit-*` headers on every answer, errors and streams included."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lingshu_server.core import request_context
from lingshu_server.core.errors import QuotaExceededError
from lingshu_server.core.quotas import QuotaCounter, TenantQuota, rate_limit_headers
from lingshu_server.http.error_handlers import send_api_error

ANY_TENANT = "*"


class TenantQuotas:
    """The quota of each tenant: its own, else the `*` entry, else none."""

    def __init__(self, quotas: dict[str, TenantQuota], counter: QuotaCounter):
        self.quotas = quotas
        self.counter = counter

    def quota_for(self, tenant: str) -> TenantQuota | None:
        return self.quotas.get(tenant) or self.quotas.get(ANY_TENANT)


def is_api_path(path: str) -> bool:
    """The paths quotas count: the API's, not probes, metrics or pages."""
    return path.startswith("/v1/") or path in ("/tokenize", "/detokenize")


class QuotaMiddleware:
    """Runs after the caller is known (AuthMiddleware). The quota's subject is the tenant, or
    the caller's identity when it names none."""

    def __init__(self, app: ASGIApp, *, quotas: TenantQuotas):
        self.app = app
        self.quotas = quotas

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = request_context.get()
        subject = ctx and (ctx.tenant or ctx.identity)
        if scope["type"] != "http" or not subject or not is_api_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        quota = self.quotas.quota_for(subject)
        if quota is None:
            await self.app(scope, receive, send)
            return
        counter = self.quotas.counter
        try:
            state = await counter.admit(subject, quota)
        except QuotaExceededError as exc:
            await send_api_error(send, exc)
            return
        headers = [(k.encode(), v.encode()) for k, v in rate_limit_headers(state).items()]

        def charge(tokens: int) -> None:
            counter.charge(subject, quota, tokens)

        assert ctx is not None
        ctx.charge_tokens = charge

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            counter.release(subject)
