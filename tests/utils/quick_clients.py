"""A pytest plugin: every httpx client in the test process shares its TLS context.

httpx builds a fresh SSL context (reading the whole CA bundle, about 25 ms) for each client, and
`httpx.get`/`httpx.post` make a client per call. The suite makes thousands of them, against
plain-HTTP loopback servers, so that alone cost tens of seconds of the fast tier. Contexts are
reusable, and one is kept per distinct (verify, cert, trust_env), so a test that brings its own
CA bundle still gets its own context.
"""

from __future__ import annotations

import functools

import httpx._transports.default as httpx_transports


def pytest_configure() -> None:
    create = httpx_transports.create_ssl_context
    if not isinstance(create, functools._lru_cache_wrapper):
        httpx_transports.create_ssl_context = functools.lru_cache(maxsize=64)(create)
