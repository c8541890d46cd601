"""README sections and their fenced examples, run as a user would paste them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def section(title: str) -> str:
    """The README section whose `## ` heading starts with `title`, up to the next one."""
    text = README.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def blocks(title: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section(title), flags=re.DOTALL)


def on_port(text: str, port: int) -> str:
    """An example's address -> the test server's."""
    assert "localhost:8000" in text
    return text.replace("localhost:8000", f"127.0.0.1:{port}")


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run an example; its standard output (it must succeed)."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    return result.stdout
