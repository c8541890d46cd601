"""response_format -> a grammar the engine enforces, so every JSON answer parses and validates.

Every schema is checked before the engine sees it: it must be a valid JSON Schema, satisfiable
in the obvious ways (no `minimum` above `maximum`, no empty `enum`, every `$ref` resolvable) and
use only keywords the grammar engine (xgrammar) enforces. Anything else is a 400 that names the
keyword and where it is, never JSON that silently breaks the schema. The grammar is built here,
in the worker pool, and cached per schema; the engine gets it as EBNF.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Executor
from threading import Lock
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from lingshu_server.core.errors import InvalidRequestError
from lingshu_server.protocol.common import ResponseFormat

PARAM = "response_format"

# Keywords the grammar enforces exactly (checked by tests/structured_output's battery).
ENFORCED = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "enum",
        "const",
        "anyOf",
        "$ref",
        "$defs",
        "definitions",
        "pattern",
        "minLength",
        "maxLength",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
    }
)
# Keywords that only describe: they constrain nothing, so nothing needs enforcing.
ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$schema",
        "$id",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
        "contentMediaType",
        "contentEncoding",
        "discriminator",  # OpenAPI's hint; the union it annotates is checked on its own
    }
)
# Formats xgrammar's own grammar gets exactly right.
NATIVE_FORMATS = frozenset({"email", "uuid", "hostname"})
# Formats it gets approximately right (a 31st of November, 01.2.3.4), written here as exact
# regular expressions instead: the calendar, leap years included, and octets without zeros.
_YEAR = r"(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = (
    rf"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    rf"|{_LEAP_YEAR}-02-29)"
)
_TIME = (
    r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
FORMAT_PATTERNS = {
    "date": f"^{_DATE}$",
    "time": f"^{_TIME}$",
    "date-time": f"^{_DATE}T{_TIME}$",
    "ipv4": rf"^{_OCTET}(?:\.{_OCTET}){{3}}$",
}
FORMATS = NATIVE_FORMATS | FORMAT_PATTERNS.keys()
# Keywords whose value is a schema, a list of schemas or a map of name -> schema.
_SCHEMA_VALUED = ("items", "additionalProperties", "not", "if", "then", "else", "contains")
_SCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
_BOUNDS = (
    ("minimum", "maximum"),
    ("minLength", "maxLength"),
    ("minItems", "maxItems"),
    ("minProperties", "maxProperties"),
)
# xgrammar 0.2.8 writes the characters of a length-bounded string as [^"\\\r\n], which lets
# raw control characters (tab, U+0001...) into the string: JSON forbids them unescaped. It also
# takes a UTF-8-encoded surrogate (ED A0 80) as one character, which decodes to three U+FFFD: a
# 30-character bound let 90 through. Neither is a character a JSON string may hold.
_LOOSE_STRING_CHARACTER = '[^\\"\\\\\\r\\n]'
_STRICT_STRING_CHARACTER = '[^\\0-\\x1f\\"\\\\\\uD800-\\uDFFF]'
JSON_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}


def _bad(message: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=PARAM, code="invalid_json_schema")


def _subschemas(schema: dict[str, Any], path: str) -> Iterator[tuple[dict[str, Any], str]]:
    """Every schema object nested in `schema` (itself included), with a readable path."""
    yield schema, path or "(root)"
    for key in _SCHEMA_VALUED:
        if isinstance(schema.get(key), dict):
            yield from _subschemas(schema[key], f"{path}.{key}".lstrip("."))
    for key in _SCHEMA_LISTS:
        for i, item in enumerate(schema.get(key) or []):
            if isinstance(item, dict):
                yield from _subschemas(item, f"{path}.{key}[{i}]".lstrip("."))
    for key in _SCHEMA_MAPS:
        value = schema.get(key)
        if isinstance(value, dict):
            for name, item in value.items():
                if isinstance(item, dict):
                    yield from _subschemas(item, f"{path}.{key}.{name}".lstrip("."))


def check_schema(schema: Any) -> None:
    """Raise a 400 naming the problem unless the grammar can enforce `schema` exactly."""
    if not isinstance(schema, dict):
        raise _bad("the JSON schema must be an object")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = ".".join(str(p) for p in exc.path) or "(root)"
        raise _bad(f"invalid JSON schema at {where}: {exc.message}") from None
    for node, path in _subschemas(schema, ""):
        _check_node(node, path, schema)


def _check_node(node: dict[str, Any], path: str, root: dict[str, Any]) -> None:
    for keyword in node:
        if keyword in ANNOTATIONS or keyword in ENFORCED or keyword.startswith("x-"):
            continue
        hint = " (use anyOf)" if keyword == "oneOf" else ""
        raise _bad(
            f"the JSON schema keyword '{keyword}' at {path} cannot be enforced by this "
            f"server's grammar engine{hint}; remove it or describe it in the prompt"
        )
    if "format" in node and node["format"] in FORMAT_PATTERNS and "pattern" in node:
        raise _bad(
            f"the JSON schema at {path} has both a pattern and the format '{node['format']}'"
        )
    if "format" in node and node["format"] not in FORMATS:
        raise _bad(
            f"the JSON schema format '{node['format']}' at {path} cannot be enforced; "
            f"supported formats: {', '.join(sorted(FORMATS))}"
        )
    if "enum" in node and not node["enum"]:
        raise _bad(f"the JSON schema at {path} has an empty enum: no value can match it")
    for low, high in _BOUNDS:
        if low in node and high in node and node[low] > node[high]:
            raise _bad(f"the JSON schema at {path} has {low} {node[low]} above {high} {node[high]}")
    if "pattern" in node:
        try:
            re.compile(node["pattern"])
        except re.error as exc:
            raise _bad(f"the pattern at {path} is not a valid regular expression: {exc}") from None
    if "$ref" in node:
        _resolve(node["$ref"], root, path)


def _resolve(ref: str, root: dict[str, Any], path: str) -> None:
    if not ref.startswith("#"):
        raise _bad(f"the $ref '{ref}' at {path} points outside the schema; only local refs work")
    target: Any = root
    for part in filter(None, ref[1:].split("/")):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or part not in target:
            raise _bad(f"the $ref '{ref}' at {path} does not resolve within the schema")
        target = target[part]


def formats_as_patterns(schema: Any) -> Any:
    """A copy of `schema` with the FORMAT_PATTERNS formats written as patterns, and every
    pattern in the form xgrammar reads right (see optional_groups_bounded)."""
    if isinstance(schema, list):
        return [formats_as_patterns(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    copy = {key: formats_as_patterns(value) for key, value in schema.items()}
    if copy.get("format") in FORMAT_PATTERNS and copy.get("type") == "string":
        copy["pattern"] = FORMAT_PATTERNS[copy.pop("format")]
    if isinstance(copy.get("pattern"), str):
        copy["pattern"] = optional_groups_bounded(copy["pattern"])
    return copy


def optional_groups_bounded(pattern: str) -> str:
    """`(...)?` written as `(...){0,1}`, the same language.

    xgrammar 0.2.8 turns an optional group that ends in a repeated element into a grammar where
    the group's first element is optional too: `(?:x[0-9]+)?Z` accepts "12Z", and the time
    format's `(?:\\.[0-9]{1,6})?` accepts "18:27:4572Z". `{0,1}` on a group it reads right.
    """
    out: list[str] = []
    escaped = in_class = group_closed = False
    for char in pattern:
        if char == "?" and group_closed:
            out.append("{0,1}")
            group_closed = False
            continue
        group_closed = False
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:  # a `]` first in a class (`[]...]`, `[^]...]`) is a character
            in_class = char != "]" or out[-1] == "[" or out[-2:] == ["[", "^"]
        elif char == "[":
            in_class = True
        elif char == ")":
            group_closed = True
        out.append(char)
    return "".join(out)


# Item and key separators when whitespace is not free: compact, so a weak model cannot pad with
# spaces; tool arguments use the template's own (json.dumps') so calls look as the model saw them.
COMPACT = (",", ":")


def _build_grammar(schema_json: str, any_whitespace: bool, separators: tuple[str, str]) -> str:
    import xgrammar

    options: dict[str, Any] = {"any_whitespace": any_whitespace}
    if not any_whitespace:
        options["separators"] = separators
    try:
        grammar = str(xgrammar.Grammar.from_json_schema(schema_json, **options))
    except Exception as exc:  # xgrammar raises RuntimeError for schemas it cannot convert
        reason = str(exc).split(": ", 1)[-1].strip().splitlines()[0][:300]
        raise _bad(f"the JSON schema cannot be turned into a grammar: {reason}") from None
    return grammar.replace(_LOOSE_STRING_CHARACTER, _STRICT_STRING_CHARACTER)


class GrammarCache:
    """Grammars per (schema, whitespace, separators), least recently used dropped beyond
    `capacity`."""

    def __init__(self, capacity: int = 256):
        self._capacity = capacity
        self._grammars: OrderedDict[tuple[str, bool, tuple[str, str]], str] = OrderedDict()
        self._lock = Lock()  # used from the worker pool's threads
        self.builds = 0

    def grammar(
        self,
        schema: dict[str, Any],
        any_whitespace: bool,
        separators: tuple[str, str] = COMPACT,
    ) -> str:
        """Check `schema` and return its grammar (CPU work: call it from the worker pool)."""
        key = (json.dumps(schema, sort_keys=True, ensure_ascii=False), any_whitespace, separators)
        with self._lock:
            if key in self._grammars:
                self._grammars.move_to_end(key)
                return self._grammars[key]
        check_schema(schema)
        grammar = _build_grammar(
            json.dumps(formats_as_patterns(schema)), any_whitespace, separators
        )
        with self._lock:
            self.builds += 1
            self._grammars[key] = grammar
            while len(self._grammars) > self._capacity:
                self._grammars.popitem(last=False)
        return grammar


def format_schema(fmt: ResponseFormat | None) -> dict[str, Any] | None:
    """The schema a response_format asks for (json_object: any object); None for text."""
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_schema" and fmt.json_schema is not None:
        return fmt.json_schema.schema_ or JSON_OBJECT_SCHEMA
    return JSON_OBJECT_SCHEMA


class StructuredOutput:
    """The grammar for a request's response_format, built in the worker pool."""

    def __init__(self, pool: Executor, cache: GrammarCache | None = None):
        self.pool = pool
        self.cache = cache or GrammarCache()

    def format_grammar(self, fmt: ResponseFormat | None) -> str | None:
        """The response_format's grammar (CPU work: call it from the worker pool)."""
        schema = format_schema(fmt)
        if schema is None or fmt is None:
            return None
        return self.cache.grammar(schema, fmt.allow_whitespace)

    async def grammar(self, fmt: ResponseFormat | None) -> str | None:
        if format_schema(fmt) is None:
            return None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self.format_grammar, fmt)
