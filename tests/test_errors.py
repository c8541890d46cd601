"""The error mapping in isolation: unknown failures are a logged 500 that leaks nothing."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI

from lingshu_server.errors import install_error_handlers
from tests.utils.errors import assert_openai_error

SECRET = "Roe^Jane MRN-99417723 left lower lobe mass"


def app_that_fails() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError(f"failed while handling {SECRET}")

    return app


@pytest.mark.parametrize("path", ["/boom"])
def test_unexpected_error_is_500_without_details(path, caplog):
    transport = httpx.ASGITransport(app=app_that_fails(), raise_app_exceptions=False)

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path)

    import asyncio

    with caplog.at_level(logging.ERROR):
        response = asyncio.run(call())
    error = assert_openai_error(response, 500, code="internal_error")
    assert error["type"] == "server_error"
    assert SECRET not in response.text and "Traceback" not in response.text
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "RuntimeError" in logged  # the operator learns what failed and where...
    assert "boom" in logged
    assert SECRET not in logged  # ...but not the message, which may quote patient data
