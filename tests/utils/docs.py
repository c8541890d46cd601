"""The fenced code blocks of the documentation pages (docs/) and the README, read and run exactly
as a user would paste them."""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def page(name: str | None = None) -> str:
    """A documentation page by its path under docs/ (`"guides/responses.md"`); the README
    without a name."""
    return (README if name is None else DOCS / name).read_text()


_read = page  # for `section`, whose parameter `page` hides the function


def section(heading: str, page: str | None = None) -> str:
    """A page (the README by default) from the heading line that starts with `heading` to the
    next heading of the same or a higher level."""
    text = _read(page)
    start = text.index(f"\n{heading}") + 1
    level = len(heading) - len(heading.lstrip("#"))
    following = re.search(rf"\n#{{1,{level}}} ", text[start + len(heading) :])
    return text[start : start + len(heading) + following.start()] if following else text[start:]


def fenced_blocks(language: str, text: str | None = None) -> list[str]:
    """Every ```language block of `text` (default: the README), in order, dedented (blocks inside
    list items are indented)."""
    text = README.read_text() if text is None else text
    pattern = rf"^( *)```{language}\n(.*?)^\1```"
    found = re.findall(pattern, text, flags=re.DOTALL | re.MULTILINE)
    return [textwrap.dedent(body) for _, body in found]


def only_block(language: str, text: str) -> str:
    (block,) = fenced_blocks(language, text)
    return block


def commands(block: str) -> list[str]:
    """The command lines of a shell block (no blank lines, no comments)."""
    lines = (line.strip() for line in block.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def on_server(example: str, port: int) -> str:
    """An example written for localhost:8000, pointed at the test server."""
    assert "localhost:8000" in example
    return example.replace("localhost:8000", f"127.0.0.1:{port}")


def run_example(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run an example as a user would, with their environment; its standard output."""
    result = subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def run_bash(script: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    return run_example(["bash", "-euo", "pipefail", "-c", script], cwd, env)
