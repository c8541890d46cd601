"""mkdocs hook: the routes table, rendered at build time from the OpenAPI document the server
itself serves at /openapi.json.

A page holding `<!-- routes -->` gets one row per operation: method and path, summary, the
statuses it can answer, and whether it needs an API key. The app is built by `create_app` without
starting it, so no engine loads and no model is read.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

SERVER = Path(__file__).resolve().parents[2] / "server"
PLACEHOLDER = "<!-- routes -->"


def openapi_document() -> dict[str, Any]:
    if str(SERVER) not in sys.path:  # document this checkout, whatever else is installed
        sys.path.insert(0, str(SERVER))
    from lingshu_server.app import create_app
    from lingshu_server.core.settings import Settings

    with tempfile.TemporaryDirectory() as model:  # never read: the engine does not start
        return create_app(Settings(model=model, docs=True)).openapi()


def first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def render_routes() -> str:
    rows = [
        "| route | what it does | statuses | API key |",
        "| --- | --- | --- | --- |",
    ]
    for path, operations in openapi_document()["paths"].items():
        for method, operation in operations.items():
            summary = operation.get("summary", "")
            described = first_sentence(operation.get("description") or "")
            what = f"{summary}: {described}" if described else summary
            statuses = ", ".join(sorted(operation.get("responses", {})))
            keyed = "yes" if operation.get("security") else "no"
            what = what.replace("|", "\\|")
            rows.append(f"| `{method.upper()} {path}` | {what} | {statuses} | {keyed} |")
    return "\n".join(rows) + "\n"


def on_page_markdown(markdown: str, **_: Any) -> str:
    if PLACEHOLDER in markdown:
        markdown = markdown.replace(PLACEHOLDER, render_routes())
    return markdown
