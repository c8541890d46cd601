"""The error mapping in isolation: unknown failures are a logged 500 that leaks nothing."""

from __future__ import annotations

import asyncio
import logging

import httpx
from fastapi import FastAPI

from lingshu_server.app import create_app
from lingshu_server.core.logs import RequestIdFilter
from lingshu_server.core.settings import Settings
from tests.utils.errors import assert_openai_error

SECRET = "Roe^Jane MRN-99417723 left lower lobe mass"


class _Records(logging.Handler):
    """Collects records as the server's own handler sees them (request id filter included)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.addFilter(RequestIdFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def app_that_fails() -> FastAPI:
    app = create_app(Settings())  # the real middleware stack; the engine never loads here

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError(f"failed while handling {SECRET}")

    return app


def test_unexpected_error_is_500_with_request_id_and_without_details():
    transport = httpx.ASGITransport(app=app_that_fails(), raise_app_exceptions=False)

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/boom", headers={"X-Request-Id": "trace-4711"})

    handler = _Records()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        response = asyncio.run(call())
    finally:
        root.removeHandler(handler)
    error = assert_openai_error(response, 500, code="internal_error")
    assert error["type"] == "server_error"
    assert response.headers["x-request-id"] == "trace-4711"
    assert SECRET not in response.text and "Traceback" not in response.text
    failures = [r for r in handler.records if "unhandled error" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in handler.records]
    assert failures[0].request_id == "trace-4711"  # the log line joins the client's trace
    logged = failures[0].getMessage()
    assert "RuntimeError" in logged  # the operator learns what failed and where...
    assert "boom" in logged
    assert SECRET not in logged  # ...but not the message, which may quote patient data
