"""Renders compared with golden files under tests/golden/helm (`UPDATE_GOLDEN=1` rewrites them)."""

from __future__ import annotations

import difflib
import hashlib
import os
import re

import pytest

from tests.deploy.files import (
    CASES,
    GOLDEN,
    rendered_case,
)


def normalized(rendered: dict[str, str]) -> str:
    """All rendered templates as one text, a generated (random) API key masked and the Grafana
    dashboard (checked against deploy/ in test_platform.py) reduced to its digest."""
    parts = []
    for path, text in rendered.items():
        if path.endswith("secret.yaml") and "lingshu-server/generated-key" in text:
            text = re.sub(r'(\n  keys: )"[^"]*"', r'\1"<generated at install>"', text)
        if path.endswith("grafana-dashboard.yaml"):
            head, dashboard = text.split("lingshu-dashboard.json: |-\n")
            digest = hashlib.sha256(dashboard.encode()).hexdigest()
            text = f"{head}lingshu-dashboard.json: <the dashboard of deploy/, sha256 {digest}>"
        parts.append(f"# Source: {path}\n{text.strip()}\n")
    return "---\n".join(parts)


@pytest.mark.parametrize("case", CASES)
def test_rendered_manifests_match_golden_files(case: str) -> None:
    actual = normalized(rendered_case(case))
    golden = GOLDEN / f"{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual)
    assert golden.exists(), f"{golden} missing: run with UPDATE_GOLDEN=1"
    expected = golden.read_text()
    if actual != expected:
        diff = difflib.unified_diff(
            expected.splitlines(), actual.splitlines(), str(golden), "rendered", lineterm=""
        )
        pytest.fail(
            "render differs from golden file (UPDATE_GOLDEN=1 to accept):\n"
            + "\n".join(list(diff)[:80])
        )
