"""GET /playground without a browser: public, on by default, off with --no-playground, served
with a Content-Security-Policy that lets only the page's own script and style run, and shipped
in the wheel. In process (the route needs no engine); the page itself runs in tests/browser."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import shutil
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from lingshu_server.app import create_app
from lingshu_server.cli import build_parser
from lingshu_server.core.settings import Settings
from tests.utils.errors import assert_openai_error

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-playground-route"


def get(settings: Settings, path: str, **headers: str) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(call())


def csp(response: httpx.Response) -> dict[str, list[str]]:
    directives = {}
    for directive in response.headers["content-security-policy"].split(";"):
        name, *sources = directive.split()
        directives[name] = sources
    return directives


def sha256_source(text: str) -> str:
    return f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.attributes: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attributes += [(tag, name, value) for name, value in attrs]


def test_public_page_even_where_keys_are_required():
    settings = Settings(model="m", api_keys=KEY)
    page = get(settings, "/playground")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<title>Lingshu playground</title>" in page.text
    # the API behind it is not public
    assert_openai_error(get(settings, "/v1/models"), 401, code="invalid_api_key")


def test_policy_allows_only_the_pages_own_script_and_style():
    page = get(Settings(model="m"), "/playground")
    policy = csp(page)
    (script,) = re.findall(r"<script>(.*?)</script>", page.text, flags=re.DOTALL)
    (style,) = re.findall(r"<style>(.*?)</style>", page.text, flags=re.DOTALL)
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == [sha256_source(script)]
    assert policy["style-src"] == [sha256_source(style)]
    assert policy["connect-src"] == ["'self'"]
    assert policy["img-src"] == ["data:", "blob:"] and policy["media-src"] == ["blob:"]
    for name in ("frame-ancestors", "base-uri", "form-action"):
        assert policy[name] == ["'none'"]
    everything = " ".join(sum(policy.values(), []))
    assert "unsafe" not in everything and "http" not in everything and "*" not in everything
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"


def test_page_needs_nothing_the_policy_forbids():
    """No external asset, no inline handler or style attribute (the policy would block them),
    no eval; every control has a label."""
    html = get(Settings(model="m"), "/playground").text
    tags = Tags()
    tags.feed(html)
    for tag, name, value in tags.attributes:
        assert not name.startswith("on"), (tag, name)
        assert name != "style", tag
        if name in ("src", "href", "action", "formaction"):
            assert value and not re.match(r"(https?:)?//", value), (tag, name, value)
    (script,) = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    for forbidden in ("eval(", "new Function", 'setTimeout("', "innerHTML", "localStorage"):
        assert forbidden not in script
    ids = {value for tag, name, value in tags.attributes if name == "id"}
    controls = {
        value
        for tag, name, value in tags.attributes
        if name == "id" and tag in ("input", "select", "textarea")
    }
    labelled = {value for tag, name, value in tags.attributes if tag == "label" and name == "for"}
    assert controls and controls <= labelled <= ids


@pytest.mark.parametrize("keys", [None, KEY])
def test_no_playground_turns_the_page_off(keys):
    settings = Settings(model="m", api_keys=keys, playground=False)
    response = get(settings, "/playground")
    assert response.status_code == (401 if keys else 404)
    assert "<html" not in response.text
    if keys:  # with a key it is simply not there
        assert get(settings, "/playground", Authorization=f"Bearer {KEY}").status_code == 404


def test_flag_and_environment_variable(monkeypatch):
    parse = build_parser().parse_args
    assert Settings(**vars(parse(["--no-playground"]))).playground is False
    assert Settings().playground is True
    monkeypatch.setenv("LINGSHU_PLAYGROUND", "false")
    assert Settings().playground is False
    assert Settings(**vars(parse(["--playground"]))).playground is True


def test_the_wheel_ships_the_page(tmp_path):
    """Built from a copy of the sources, so the build leaves nothing in the checkout."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "server", source / "server", ignore=ignore)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("lingshu_server-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("lingshu_server/http/playground.html").decode()
    assert shipped == (ROOT / "server/lingshu_server/http/playground.html").read_text()
