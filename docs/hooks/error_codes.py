"""mkdocs hook: the error classes table, rendered from the code at build time.

A page holding `<!-- error-classes -->` gets one row per `APIError` subclass: its HTTP status,
OpenAI `type`, default `code`, whether it answers with `Retry-After`, and the reason it is counted
under in `lingshu_rejected_requests_total`.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from http import HTTPStatus
from pathlib import Path
from typing import Any

SERVER = Path(__file__).resolve().parents[2] / "server"
PLACEHOLDER = "<!-- error-classes -->"

# Where the error classes live (all of them: tests/test_layers.py checks it).
ERROR_MODULE = "lingshu_server.core.errors"


def api_error_class() -> type:
    """`APIError`, with every module that defines a subclass of it imported."""
    if str(SERVER) not in sys.path:  # document this checkout, whatever else is installed
        sys.path.insert(0, str(SERVER))
    return importlib.import_module(ERROR_MODULE).APIError


def error_classes() -> list[type]:
    """Every subclass of APIError, in order of status then name."""
    pending, found = [api_error_class()], []
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: (int(c.status), c.__name__))


def retries(cls: type) -> bool:
    """Whether the error carries a Retry-After header."""
    headers = getattr(cls, "headers", None) or {}
    return "Retry-After" in headers or any(
        "retry_after" in name for name in inspect.signature(cls.__init__).parameters
    )


def render_error_classes() -> str:
    rows = [
        "| status | type | code | Retry-After | counted as | class |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for cls in error_classes():
        status = HTTPStatus(int(cls.status))
        code = f"`{cls.code}`" if cls.code else "(set where raised)"
        rejection = f"`{cls.rejection}`" if cls.rejection else "—"
        rows.append(
            f"| {status.value} {status.phrase} | `{cls.type}` | {code} "
            f"| {'yes' if retries(cls) else ''} | {rejection} | `{cls.__name__}` |"
        )
    return "\n".join(rows) + "\n"


def on_page_markdown(markdown: str, **_: Any) -> str:
    if PLACEHOLDER in markdown:
        markdown = markdown.replace(PLACEHOLDER, render_error_classes())
    return markdown
