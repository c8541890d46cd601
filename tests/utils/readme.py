"""The README's examples, found by section, to run as a user would paste them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def section(title: str) -> str:
    """The text of the `## {title}` section."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def block(title: str, language: str) -> str:
    """The one `language` block of a section, pointed at `localhost:8000`."""
    (found,) = re.findall(rf"```{language}\n(.*?)```", section(title), flags=re.DOTALL)
    assert "localhost:8000" in found
    return found


def run(command: list[str], cwd: Path, port: int) -> str:
    """Run `command` (whose last item is the example) against the test server; its stdout."""
    *head, script = command
    script = script.replace("localhost:8000", f"127.0.0.1:{port}")
    result = subprocess.run([*head, script], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout
