"""Per-request telemetry as ASGI middleware: request ids, access log, audit log, metrics."""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lingshu_server.core import request_context
from lingshu_server.core.lifecycle import Lifecycle
from lingshu_server.core.logs import AuditLog, log_access
from lingshu_server.core.metrics import Metrics
from lingshu_server.core.request_context import RequestContext, request_id_from
from lingshu_server.http.error_handlers import log_unexpected, unexpected_error_response

logger = logging.getLogger(__name__)

# Probes and scrapes are logged only when they fail, or they would drown the access log.
QUIET_ROUTES = frozenset({"/health", "/ready", "/metrics"})
AUDITED_ROUTES = frozenset(
    {
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/completions",
        "/tokenize",
        "/detokenize",
        "/v1/images/preview",
        "/v1/reports",
        "/v1/reports/{report_id}/store",
    }
)
CLIENT_CLOSED_REQUEST = 499  # nginx's code for "the client went away first"


class TelemetryMiddleware:
    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, lifecycle: Lifecycle, audit: AuditLog | None
    ):
        self.app = app
        self.metrics = metrics
        self.lifecycle = lifecycle
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        raw_id = headers.get(b"x-request-id")
        ctx = RequestContext(
            request_id=request_id_from(raw_id.decode("latin-1") if raw_id else None),
            method=scope["method"],
        )
        token = request_context.current.set(ctx)
        self.metrics.in_flight.inc()
        self.lifecycle.request_started()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                ctx.response_started = True
                ctx.status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", ctx.request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Here, inside the request's context, so the 500 carries X-Request-Id and the log
            # line its request_id (Starlette's own handler runs outside every middleware).
            log_unexpected(exc)
            if not ctx.response_started:
                await unexpected_error_response()(scope, receive, send_with_id)
            ctx.status = ctx.status or 500
        finally:
            latency = time.perf_counter() - ctx.started
            route = scope.get("route")
            ctx.route = getattr(route, "path", None) or "other"
            if ctx.client_disconnected or not ctx.status:
                ctx.client_disconnected = True
                ctx.status = ctx.status or CLIENT_CLOSED_REQUEST
            self.metrics.in_flight.dec()
            self.lifecycle.request_finished()
            self.metrics.record_request(ctx, latency)
            if ctx.route not in QUIET_ROUTES or ctx.status >= 400:
                log_access(ctx, latency)
            if self.audit is not None and (ctx.route in AUDITED_ROUTES or ctx.stored):
                try:
                    await asyncio.to_thread(self.audit.write, ctx, latency)
                except OSError as exc:
                    logger.error("cannot write the audit log: %s", type(exc).__name__)
            request_context.current.reset(token)
