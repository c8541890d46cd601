"""The README's fenced code blocks, as the tests that run them verbatim read them."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def fenced_blocks(language: str, text: str | None = None) -> list[str]:
    """Every ```language block, in order, dedented (blocks inside list items are indented)."""
    text = README.read_text() if text is None else text
    pattern = rf"^( *)```{language}\n(.*?)^\1```"
    return [
        textwrap.dedent(body)
        for _, body in re.findall(pattern, text, flags=re.DOTALL | re.MULTILINE)
    ]


def section(heading: str) -> str:
    """The README from the line `heading` to the next heading of the same or a higher level."""
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    level = len(heading) - len(heading.lstrip("#"))
    following = re.search(rf"\n#{{1,{level}}} ", text[start + len(heading) + 2 :])
    end = start + len(heading) + 2 + following.start() if following else len(text)
    return text[start:end]


def commands(block: str) -> list[str]:
    """The command lines of a shell block (no blank lines, no comments)."""
    lines = (line.strip() for line in block.splitlines())
    return [line for line in lines if line and not line.startswith("#")]
