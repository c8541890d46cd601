"""Every JSON answer parses and validates against the schema the client gave, even from the
random demo model; a schema the grammar engine cannot enforce is a 400 naming the keyword.

The battery runs each schema streaming and not, sampled (temperature 1, fixed seeds, so runs
repeat), through the real engine, and checks every output with `json.loads` and `jsonschema`
(formats included).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import pytest

from lingshu_server.services.structured_output import GrammarCache, check_schema
from tests.utils.chat import stream_text, user
from tests.utils.errors import assert_openai_error
from tests.utils.schemas import SCHEMAS

MAX_TOKENS = 1500


def ask_json(client: httpx.Client, schema: dict, seed: int, stream: bool) -> tuple[str, str]:
    """(content, finish_reason) for one sampled answer constrained to `schema`."""
    body = {
        "messages": [user("Answer as JSON.")],
        "max_tokens": MAX_TOKENS,
        "temperature": 1,
        "seed": seed,
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
    }
    if stream:
        return stream_text(client, body)
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    return choice["message"]["content"], choice["finish_reason"]


@pytest.mark.e2e
def test_battery_every_output_parses_and_validates(server):
    cases = [
        (name, seed, stream) for name in SCHEMAS for seed in (1, 2) for stream in (False, True)
    ]
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER

    def run(case: tuple[str, int, bool]) -> str | None:
        name, seed, stream = case
        with httpx.Client(base_url=server.base_url, timeout=300) as client:
            content, finish = ask_json(client, SCHEMAS[name], seed, stream)
        if finish != "stop":
            return f"{case}: finish_reason {finish}: {content[:200]!r}"
        try:
            value = json.loads(content)
            jsonschema.validate(value, SCHEMAS[name], format_checker=checker)
        except (ValueError, jsonschema.ValidationError) as exc:
            return f"{case}: {type(exc).__name__}: {str(exc)[:200]} in {content[:200]!r}"
        return None

    with ThreadPoolExecutor(8) as pool:
        failures = [f for f in pool.map(run, cases) if f]
    assert len(SCHEMAS) >= 25
    assert not failures, "\n".join(failures)


@pytest.mark.e2e
@pytest.mark.parametrize("stream", [False, True])
def test_json_object_always_parses(client, stream):
    for seed in range(3):
        body = {
            "messages": [user("Report as JSON.")],
            "max_tokens": MAX_TOKENS,
            "seed": seed,
            "response_format": {"type": "json_object"},
        }
        if stream:
            content, finish = stream_text(client, body)
        else:
            choice = client.post("/v1/chat/completions", json=body).json()["choices"][0]
            content, finish = choice["message"]["content"], choice["finish_reason"]
        assert finish == "stop"
        assert isinstance(json.loads(content), dict)


@pytest.mark.e2e
def test_compact_unless_whitespace_is_allowed(client):
    schema = SCHEMAS["object-closed"]
    content, _ = ask_json(client, schema, 3, False)
    value = json.loads(content)
    assert content == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


UNENFORCEABLE = {
    "uniqueItems": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
    "oneOf": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
    "not": {"not": {"type": "string"}},
    "if": {"if": {"type": "integer"}, "then": {"minimum": 0}},
    "multipleOf": {"type": "integer", "multipleOf": 5},
    "dependentRequired": {"type": "object", "dependentRequired": {"a": ["b"]}},
    "contains": {"type": "array", "contains": {"const": 1}},
    "format": {"type": "string", "format": "iri-reference"},
}
INVALID = {
    "pattern": {"type": "string", "pattern": "([a-z"},
    "$ref": {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
    "minimum": {"type": "integer", "minimum": 10, "maximum": 1},
    "enum": {"enum": []},
    "type": {"type": "strnig"},
}


@pytest.mark.parametrize("keyword", sorted(UNENFORCEABLE) + sorted(INVALID))
@pytest.mark.parametrize("allow_whitespace", [False, True])
def test_schema_problems_are_400_naming_the_keyword(client, keyword, allow_whitespace):
    schema = UNENFORCEABLE.get(keyword) or INVALID[keyword]
    response = client.post(
        "/v1/chat/completions",
        json={
            "messages": [user("hi")],
            "max_tokens": 5,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "r", "schema": schema},
                "allow_whitespace": allow_whitespace,
            },
        },
    )
    error = assert_openai_error(response, 400, code="invalid_json_schema")
    assert error["param"] == "response_format"
    named = "$defs/missing" if keyword == "$ref" else keyword
    assert named in error["message"] or (keyword == "type" and "strnig" in error["message"])


def test_every_enforced_keyword_changes_the_grammar():
    """The allow-list is honest: each keyword it trusts changes what the grammar accepts."""
    cache = GrammarCache()
    pairs = [
        ({"type": "string"}, {"type": "string", "maxLength": 3}),
        ({"type": "string"}, {"type": "string", "minLength": 3}),
        ({"type": "string"}, {"type": "string", "pattern": "^a$"}),
        ({"type": "string"}, {"type": "string", "format": "date"}),
        ({"type": "integer"}, {"type": "integer", "minimum": 3}),
        ({"type": "integer"}, {"type": "integer", "maximum": 3}),
        ({"type": "integer"}, {"type": "integer", "exclusiveMinimum": 3}),
        ({"type": "number"}, {"type": "number", "exclusiveMaximum": 3.5}),
        ({"type": "array", "items": {}}, {"type": "array", "items": {}, "minItems": 1}),
        ({"type": "array", "items": {}}, {"type": "array", "items": {}, "maxItems": 1}),
        ({"type": "array"}, {"type": "array", "prefixItems": [{"type": "integer"}]}),
        ({"type": "integer"}, {"type": "integer", "enum": [1, 2]}),
        ({"type": "integer"}, {"type": "integer", "const": 1}),
    ]
    for loose, strict in pairs:
        check_schema(strict)
        assert cache.grammar(loose, False) != cache.grammar(strict, False), strict


def test_grammars_are_built_once_per_schema():
    cache = GrammarCache()
    schema = SCHEMAS["report"]
    first = cache.grammar(schema, False)
    assert cache.grammar(json.loads(json.dumps(schema)), False) == first
    assert cache.builds == 1
    cache.grammar(schema, True)
    assert cache.builds == 2


def test_length_bounded_strings_forbid_raw_control_characters():
    """xgrammar 0.2.8 lets raw control characters into maxLength strings; JSON forbids them."""
    grammar = GrammarCache().grammar({"type": "string", "maxLength": 20}, False)
    assert '[^\\"\\\\\\r\\n]' not in grammar
    assert "\\0-\\x1f" in grammar.split("root_characters ::=")[1].splitlines()[0]


def test_length_bounded_strings_hold_no_encoded_surrogates():
    """xgrammar counted UTF-8-encoded surrogates (ED A0 80, three U+FFFD once decoded) as one
    character each, so a maxLength of 3 let 9 characters through."""
    import xgrammar
    from xgrammar.testing import _is_grammar_accept_string

    text = GrammarCache().grammar({"type": "string", "maxLength": 3}, False)
    grammar = xgrammar.Grammar.from_ebnf(text)
    assert _is_grammar_accept_string(grammar, '"é😀a"'.encode())
    assert not _is_grammar_accept_string(grammar, b'"\xed\xa0\x80"')
    assert not _is_grammar_accept_string(grammar, b'"a\tb"')
