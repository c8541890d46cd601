"""Patterns and formats as the grammar enforces them, checked string by string with xgrammar's
own matcher: optional groups that end in a repetition (which xgrammar 0.2.8 gets wrong when
written `(...)?`) admit exactly what Python's `re` admits."""

from __future__ import annotations

import re

import pytest
import xgrammar

from lingshu_server.services.structured_output import (
    FORMAT_PATTERNS,
    GrammarCache,
    optional_groups_bounded,
)

COMPILER = xgrammar.GrammarCompiler(xgrammar.TokenizerInfo([]))
CACHE = GrammarCache()
CASES = {
    r"^(?:x[0-9]+)?Z$": ["Z", "x1Z", "x123Z", "12Z", "xZ", "1Z"],
    r"^(?:\.[0-9]{1,6})?Z$": ["Z", ".1Z", ".123456Z", "1Z", "4572Z", ".1234567Z"],
    r"^[A-Z]{2}(?:-[0-9]{2,3})?$": ["AB", "AB-12", "AB-123", "AB12", "AB-1", "AB123"],
    r"^(a|bc*)?d$": ["d", "ad", "bd", "bccd", "cd", "abd"],
    r"^[)?]+(x)?$": [")", "?x", ")?", "x"],
}


def admitted(schema: dict, value: str) -> bool:
    matcher = xgrammar.GrammarMatcher(COMPILER.compile_grammar(CACHE.grammar(schema, False)))
    return matcher.accept_string(f'"{value}"') and matcher.is_completed()


@pytest.mark.parametrize("pattern", sorted(CASES))
def test_patterns_admit_what_python_admits(pattern):
    for value in CASES[pattern]:
        expected = re.search(pattern, value) is not None
        assert admitted({"type": "string", "pattern": pattern}, value) is expected, value


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("time", ["18:27:45Z", "18:27:45.5+01:00"], ["18:27:4572Z", "18:27:45.Z", "1:27:45Z"]),
        ("date-time", ["2024-02-29T00:00:00Z"], ["2023-02-29T00:00:00Z", "2024-01-01T00:00:0012Z"]),
    ],
)
def test_formats_with_optional_fractions(fmt, good, bad):
    schema = {"type": "string", "format": fmt}
    assert all(admitted(schema, value) for value in good)
    assert not any(admitted(schema, value) for value in bad)
    assert all(re.search(FORMAT_PATTERNS[fmt], value) for value in good)


def test_only_group_options_are_rewritten():
    assert optional_groups_bounded(r"(a)?\)?[)?]b?") == r"(a){0,1}\)?[)?]b?"
    assert optional_groups_bounded(r"(a)??(b)+?") == r"(a){0,1}?(b)+?"
