"""The hostile-input corpus: what an attacker or a careless client sends, each case with the
status (and where it matters the code and param) the server must answer.

Cases are generated from tables: every wrong JSON type for every request field, values out of
range, what vLLM's SamplingParams or its transport would refuse, broken Unicode, broken bodies,
auth, routes, images, sizes and JSON schemas the grammar compiler cannot build. The few cases
whose sizes the issue names (50 MB prompts, four 12000x12000 PNGs) are scaled down in the short
mode and run at full size with --reliability-long.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.reliability.server_config import KEY, MAX_IMAGES, MAX_TOKENS_CAP
from tests.utils.images import data_url, encode, gradient_image, image_data_url, image_part

CHAT = "/v1/chat/completions"
JSON = {"Content-Type": "application/json"}
AUTH = {"Authorization": f"Bearer {KEY}"}
MB = 1024 * 1024


@dataclass(frozen=True)
class Case:
    id: str
    status: int
    body: Any = None  # sent as json.dumps(body): lone surrogates become \\ud800 escapes
    raw: bytes | None = None  # sent as is instead of body
    build: Callable[[], Any] | None = None  # a big body, made only when the case runs
    headers: dict[str, str] = field(default_factory=lambda: {**AUTH, **JSON})
    method: str = "POST"
    path: str = CHAT
    code: str | None = None
    param: str | None = None
    bound_s: float = 5.0
    # Fixed by the fidelity issue (#10): prompt work off the event loop, token estimates before
    # tokenizing, image cost from the header, JSON schemas checked before the engine.
    needs_fidelity: bool = False

    def content(self) -> bytes | None:
        if self.raw is not None:
            return self.raw
        body = self.build() if self.build is not None else self.body
        return None if body is None else json.dumps(body).encode()


def chat(**fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "Findings?"}], "max_tokens": 2, **fields}


def user(content: Any) -> dict[str, Any]:
    return chat(messages=[{"role": "user", "content": content}])


def image_request(url: str, **image_url: Any) -> dict[str, Any]:
    return user([image_part(url, **image_url), {"type": "text", "text": "Findings?"}])


# ------------------------------------------------------------------------- wrong JSON types

# One value of every JSON type; each field below lists which of them it accepts.
SAMPLES: dict[str, Any] = {
    "string": "1",
    "integer": 1,
    "decimal": 1.5,
    "boolean": True,
    "null": None,
    "array": [1],
    "object": {"a": 1},
}
# top-level field -> the JSON types OpenAI accepts for it (null means the default)
FIELD_TYPES: dict[str, set[str]] = {
    "messages": {"array"},
    "model": {"string", "null"},
    "stream": {"boolean", "null"},
    "stream_options": {"object", "null"},
    "temperature": {"integer", "decimal", "null"},
    "top_p": {"integer", "decimal", "null"},
    "max_tokens": {"integer", "null"},
    "max_completion_tokens": {"integer", "null"},
    "stop": {"string", "array", "null"},
    "seed": {"integer", "null"},
    "n": {"integer", "null"},
    "presence_penalty": {"integer", "decimal", "null"},
    "frequency_penalty": {"integer", "decimal", "null"},
    "logprobs": {"boolean", "null"},
    "top_logprobs": {"integer", "null"},
    "response_format": {"object", "null"},
    "user": {"string", "null"},
    "top_k": {"integer", "null"},
    "min_p": {"integer", "decimal", "null"},
    "repetition_penalty": {"integer", "decimal", "null"},
    "ignore_eos": {"boolean"},
    "min_tokens": {"integer"},
    "request_timeout": {"integer", "decimal", "null"},
}


def wrong_types() -> Iterator[Case]:
    for name, accepted in FIELD_TYPES.items():
        for kind, value in SAMPLES.items():
            if kind in accepted:
                continue
            # an array of strings is a valid `stop`; an object is a valid response_format
            yield Case(f"type-{name}-{kind}", 400, body=chat(**{name: value}), param=name)
    # numbers as strings, the coercions OpenAI refuses
    for name, value in [
        ("max_tokens", "10"),
        ("max_tokens", 10.0),
        ("n", "2"),
        ("seed", "1"),
        ("stream", "yes"),
        ("stream", "true"),
        ("stream", 1),
        ("logprobs", "yes"),
        ("temperature", "0.5"),
        ("top_logprobs", 2.0),
    ]:
        yield Case(f"coerce-{name}-{value!r}", 400, body=chat(**{name: value}), param=name)


NESTED_WRONG: list[tuple[str, dict[str, Any], str]] = [
    ("role-int", {"messages": [{"role": 1, "content": "hi"}]}, "messages[0].role"),
    ("role-unknown", {"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ("role-missing", {"messages": [{"content": "hi"}]}, "messages[0].role"),
    ("content-int", {"messages": [{"role": "user", "content": 1}]}, "messages[0].content"),
    ("content-object", {"messages": [{"role": "user", "content": {}}]}, "messages[0].content"),
    ("content-null-user", {"messages": [{"role": "user", "content": None}]}, "messages[0]"),
    ("part-int", {"messages": [{"role": "user", "content": [1]}]}, "messages[0].content[0]"),
    (
        "part-no-type",
        {"messages": [{"role": "user", "content": [{"text": "hi"}]}]},
        "messages[0].content[0]",
    ),
    (
        "part-type-video",
        {"messages": [{"role": "user", "content": [{"type": "video", "video": "x"}]}]},
        "messages[0].content[0]",
    ),
    (
        "text-int",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
        "messages[0].content[0].text",
    ),
    (
        "text-missing",
        {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
        "messages[0].content[0].text",
    ),
    ("name-int", {"messages": [{"role": "user", "content": "hi", "name": 1}]}, "messages[0].name"),
    ("message-string", {"messages": ["hi"]}, "messages[0]"),
    ("stream-options-string", {"stream_options": "usage"}, "stream_options"),
    ("include-usage-string", {"stream_options": {"include_usage": "yes"}}, "stream_options"),
    ("include-usage-int", {"stream_options": {"include_usage": 1}}, "stream_options"),
    ("response-format-type-int", {"response_format": {"type": 1}}, "response_format"),
    ("response-format-type-xml", {"response_format": {"type": "xml"}}, "response_format"),
    ("response-format-no-type", {"response_format": {}}, "response_format"),
    (
        "json-schema-missing",
        {"response_format": {"type": "json_schema"}},
        "response_format",
    ),
    (
        "json-schema-string",
        {"response_format": {"type": "json_schema", "json_schema": "x"}},
        "response_format",
    ),
    (
        "json-schema-schema-string",
        {"response_format": {"type": "json_schema", "json_schema": {"schema": "x"}}},
        "response_format",
    ),
    (
        "json-schema-name-int",
        {"response_format": {"type": "json_schema", "json_schema": {"name": 1}}},
        "response_format",
    ),
    (
        "allow-whitespace-string",
        {"response_format": {"type": "json_object", "allow_whitespace": "yes"}},
        "response_format",
    ),
]

IMAGE_URL_WRONG: list[tuple[str, Any]] = [
    ("image-url-int", 1),
    ("image-url-array", ["data:x"]),
    ("url-int", {"url": 1}),
    ("url-missing", {}),
    ("url-empty", {"url": ""}),
    ("detail-unknown", {"url": "data:x", "detail": "max"}),
    ("detail-int", {"url": "data:x", "detail": 1}),
    ("min-pixels-string", {"url": "data:x", "min_pixels": "1"}),
    ("max-pixels-decimal", {"url": "data:x", "max_pixels": 1.5}),
    ("min-over-max-pixels", {"url": "data:x", "min_pixels": 10000, "max_pixels": 100}),
    ("dicom-string", {"url": "data:x", "dicom": "lung"}),
    ("dicom-window-unknown", {"url": "data:x", "dicom": {"window": "liver"}}),
    ("dicom-center-string", {"url": "data:x", "dicom": {"center": "40", "width": 400}}),
    ("dicom-width-zero", {"url": "data:x", "dicom": {"center": 40, "width": 0}}),
    ("dicom-center-alone", {"url": "data:x", "dicom": {"center": 40}}),
    (
        "dicom-window-and-center",
        {"url": "data:x", "dicom": {"window": "lung", "center": 1, "width": 2}},
    ),
    ("dicom-frame-negative", {"url": "data:x", "dicom": {"frame": -1}}),
    ("dicom-frame-string", {"url": "data:x", "dicom": {"frame": "0"}}),
]


def nested_wrong() -> Iterator[Case]:
    for name, fields, param in NESTED_WRONG:
        yield Case(f"nested-{name}", 400, body=chat(**fields), param=param)
    for name, image_url in IMAGE_URL_WRONG:
        part = {"type": "image_url", "image_url": image_url}
        body = user([part, {"type": "text", "text": "Findings?"}])
        yield Case(f"nested-{name}", 400, body=body)


# ------------------------------------------------------------------------- values and ranges

OUT_OF_RANGE: list[tuple[str, dict[str, Any], str]] = [
    ("temperature-negative", {"temperature": -0.1}, "temperature"),
    ("temperature-over-2", {"temperature": 2.1}, "temperature"),
    ("top-p-zero", {"top_p": 0}, "top_p"),
    ("top-p-over-1", {"top_p": 1.1}, "top_p"),
    ("max-tokens-zero", {"max_tokens": 0}, "max_tokens"),
    ("max-tokens-negative", {"max_tokens": -1}, "max_tokens"),
    ("max-tokens-over-cap", {"max_tokens": MAX_TOKENS_CAP + 1}, "max_tokens"),
    ("max-tokens-2-64", {"max_tokens": 2**64}, "max_tokens"),
    ("max-completion-tokens-over-cap", {"max_completion_tokens": 10**6}, "max_completion_tokens"),
    ("n-zero", {"n": 0}, "n"),
    ("n-17", {"n": 17}, "n"),
    ("n-2-greedy", {"n": 2, "temperature": 0}, "n"),
    ("presence-penalty-over", {"presence_penalty": 2.5}, "presence_penalty"),
    ("frequency-penalty-under", {"frequency_penalty": -3}, "frequency_penalty"),
    ("top-logprobs-21", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ("top-logprobs-negative", {"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
    ("top-logprobs-without-logprobs", {"top_logprobs": 2}, "top_logprobs"),
    ("top-k-minus-2", {"top_k": -2}, "top_k"),
    ("top-k-2-40", {"top_k": 2**40}, "top_k"),
    ("min-p-over-1", {"min_p": 1.5}, "min_p"),
    ("repetition-penalty-zero", {"repetition_penalty": 0}, "repetition_penalty"),
    ("repetition-penalty-negative", {"repetition_penalty": -1}, "repetition_penalty"),
    ("min-tokens-negative", {"min_tokens": -1}, "min_tokens"),
    ("min-tokens-over-max-tokens", {"min_tokens": 5, "max_tokens": 4}, "min_tokens"),
    (
        "min-tokens-over-max-completion-tokens",
        {"min_tokens": 5, "max_completion_tokens": 3},
        "min_tokens",
    ),
    (
        "min-tokens-over-default-cap",
        {"min_tokens": MAX_TOKENS_CAP + 1, "max_tokens": None},
        "min_tokens",
    ),
    ("seed-2-64", {"seed": 2**64}, "seed"),
    ("seed-under-int64", {"seed": -(2**63) - 1}, "seed"),
    ("seed-2-100", {"seed": 2**100}, "seed"),
    ("stop-empty-string", {"stop": ""}, "stop"),
    ("stop-empty-in-list", {"stop": [""]}, "stop"),
    ("stop-empty-among-others", {"stop": ["Impression", ""]}, "stop"),
    ("stop-five", {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("request-timeout-zero", {"request_timeout": 0}, "request_timeout"),
    ("request-timeout-negative", {"request_timeout": -1}, "request_timeout"),
    ("messages-empty", {"messages": []}, "messages"),
]

NON_FINITE = ["temperature", "top_p", "repetition_penalty", "request_timeout", "presence_penalty"]

# Values at the edge that must still work (a 200).
ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("seed-max-uint64", {"seed": 2**64 - 1}),
    ("seed-min-int64", {"seed": -(2**63)}),
    ("seed-minus-1", {"seed": -1}),
    ("temperature-int", {"temperature": 1}),
    ("temperature-zero", {"temperature": 0}),
    ("top-p-one", {"top_p": 1}),
    ("max-tokens-at-cap", {"max_tokens": MAX_TOKENS_CAP}),
    ("min-tokens-equal-max", {"min_tokens": 2, "max_tokens": 2}),
    ("min-tokens-at-default-cap", {"min_tokens": 1, "max_tokens": None}),
    ("stop-four", {"stop": ["a", "b", "c", "d"]}),
    ("n-16", {"n": 16, "temperature": 1}),
    ("nulls-for-optionals", {"temperature": None, "top_p": None, "seed": None, "stop": None}),
    ("unknown-field-ignored", {"frobnicate": True, "tools": []}),
    ("emoji-and-cjk", {"messages": [{"role": "user", "content": "胸片 🫁 findings?"}]}),
    ("nul-character", {"messages": [{"role": "user", "content": "a\u0000b"}]}),
    (
        "developer-role",
        {
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": "hi"},
            ]
        },
    ),
    (
        "assistant-null-content",
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": None},
                {"role": "user", "content": "and?"},
            ]
        },
    ),
    ("logprobs-top-20", {"logprobs": True, "top_logprobs": 20}),
    ("json-object", {"response_format": {"type": "json_object"}, "max_tokens": 8}),
    ("stream-with-usage", {"stream": True, "stream_options": {"include_usage": True}}),
]


def values() -> Iterator[Case]:
    for name, fields, param in OUT_OF_RANGE:
        yield Case(f"range-{name}", 400, body=chat(**fields), param=param)
    for name in NON_FINITE:
        for literal in ("NaN", "Infinity", "-Infinity"):
            raw = json.dumps(chat(**{name: 0.5})).replace("0.5", literal).encode()
            yield Case(f"non-finite-{name}-{literal}", 400, raw=raw, param=name)
    raw = b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 1e999}'
    yield Case("number-overflows-to-infinity", 400, raw=raw, param="temperature")
    for name, fields in ACCEPTED:
        yield Case(f"accepted-{name}", 200, body=chat(**fields), bound_s=30)


# ------------------------------------------------------------------------- Unicode

SURROGATES = ["a\ud800b", "\udfff", "x\ud83d"]  # lone high, lone low, a pair cut in half


def unicode_cases() -> Iterator[Case]:
    for i, text in enumerate(SURROGATES):
        yield Case(f"surrogate-content-{i}", 400, body=user(text), param="messages[0].content")
        body = user([{"type": "text", "text": text}])
        yield Case(f"surrogate-text-part-{i}", 400, body=body, param="messages[0].content[0].text")
    where = {
        "stop": ({"stop": "\ud800"}, "stop"),
        "stop-list": ({"stop": ["ok", "\ud800"]}, "stop[1]"),
        "name": (
            {"messages": [{"role": "user", "content": "hi", "name": "\ud800"}]},
            "messages[0].name",
        ),
        "user": ({"user": "\udc00"}, "user"),
        "model": ({"model": "lingshu\ud800"}, "model"),
        "system": (
            {
                "messages": [
                    {"role": "system", "content": "\ud800"},
                    {"role": "user", "content": "hi"},
                ]
            },
            "messages[0].content",
        ),
    }
    for name, (fields, param) in where.items():
        yield Case(f"surrogate-{name}", 400, body=chat(**fields), param=param)
    body = image_request("data:image/png;base64,iVBO\ud800")
    yield Case("surrogate-image-url", 400, body=body, param="messages[0].content[0].image_url.url")
    yield Case(
        "invalid-utf8-body", 400, raw=b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}'
    )


# ------------------------------------------------------------------------- bodies and headers


def bodies() -> Iterator[Case]:
    yield Case("malformed-json", 400, raw=b'{"messages": [')
    yield Case("empty-body", 400, raw=b"")
    yield Case("json-null", 400, raw=b"null")
    yield Case("json-array", 400, raw=b"[]")
    yield Case("json-string", 400, raw=b'"hello"')
    yield Case("json-number", 400, raw=b"42")
    yield Case("trailing-garbage", 400, raw=json.dumps(chat()).encode() + b"}}")
    yield Case("deeply-nested", 400, raw=b"[" * 100_000)
    yield Case("deeply-nested-in-field", 400, raw=b'{"messages": ' + b"[" * 50_000)
    yield Case("single-quotes", 400, raw=b"{'messages': []}")
    yield Case("no-content-type", 415, raw=json.dumps(chat()).encode(), headers={**AUTH})
    yield Case(
        "text-plain",
        415,
        raw=json.dumps(chat()).encode(),
        headers={**AUTH, "Content-Type": "text/plain"},
    )
    yield Case(
        "form-urlencoded",
        415,
        raw=b"messages=hi",
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    )
    yield Case(
        "multipart",
        415,
        raw=b"--x\r\n\r\nhi\r\n--x--",
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"},
    )
    yield Case(
        "json-with-charset",
        200,
        body=chat(),
        headers={**AUTH, "Content-Type": "application/json; charset=utf-8"},
        bound_s=30,
    )
    yield Case(
        "duplicate-keys-last-wins",
        400,
        raw=b'{"messages": [{"role": "user", "content": "hi"}], "n": 1, "n": "2"}',
        param="n",
    )


def auth_cases() -> Iterator[Case]:
    keyless = {**JSON}
    yield Case("no-key", 401, body=chat(), headers=keyless, code="invalid_api_key")
    yield Case(
        "wrong-key",
        401,
        body=chat(),
        headers={**JSON, "Authorization": "Bearer sk-nope"},
        code="invalid_api_key",
    )
    yield Case(
        "basic-auth",
        401,
        body=chat(),
        headers={**JSON, "Authorization": "Basic dXNlcjpwdw=="},
        code="invalid_api_key",
    )
    yield Case(
        "bearer-empty",
        401,
        body=chat(),
        headers={**JSON, "Authorization": "Bearer"},
        code="invalid_api_key",
    )
    yield Case(
        "key-without-scheme",
        401,
        body=chat(),
        headers={**JSON, "Authorization": KEY},
        code="invalid_api_key",
    )
    yield Case(
        "key-prefix",
        401,
        body=chat(),
        headers={**JSON, "Authorization": f"Bearer {KEY[:-1]}"},
        code="invalid_api_key",
    )
    yield Case(
        "no-key-malformed-json", 401, raw=b"{not json", headers=keyless, code="invalid_api_key"
    )
    yield Case("no-key-no-content-type", 401, raw=b"{}", headers={}, code="invalid_api_key")
    yield Case(
        "no-key-models", 401, method="GET", path="/v1/models", headers={}, code="invalid_api_key"
    )
    yield Case(
        "no-key-unknown-route",
        401,
        method="GET",
        path="/v1/nothing",
        headers={},
        code="invalid_api_key",
    )
    yield Case(
        "no-key-large-body",
        401,
        build=lambda: {"messages": "x" * (16 * MB)},
        headers=keyless,
        code="invalid_api_key",
    )
    yield Case(
        "bearer-lowercase",
        200,
        body=chat(),
        headers={**JSON, "Authorization": f"bearer {KEY}"},
        bound_s=30,
    )


def routes() -> Iterator[Case]:
    yield Case("get-chat", 405, method="GET")
    yield Case("put-chat", 405, method="PUT", body=chat())
    yield Case("delete-chat", 405, method="DELETE")
    yield Case("unknown-v1-route", 404, method="GET", path="/v1/nothing")
    completions = "/v1/completions"
    yield Case("completions-no-prompt", 400, path=completions, body={"max_tokens": 2})
    yield Case("completions-bad-token", 400, path=completions, body={"prompt": [10**9]})
    yield Case(
        "unknown-model", 404, body=chat(model="gpt-4o"), code="model_not_found", param="model"
    )
    yield Case("path-traversal", 404, method="GET", path="/v1/../../etc/passwd")
    yield Case("post-health", 405, path="/health", headers={}, body={})


# ------------------------------------------------------------------------- images


def images(long: bool) -> Iterator[Case]:
    part = "messages[0].content[0].image_url"
    png = encode(gradient_image(64, 64), "PNG")
    yield Case(
        "image-bad-base64",
        400,
        body=image_request("data:image/png;base64,@@@"),
        code="invalid_base64",
        param=part,
    )
    yield Case(
        "image-not-an-image",
        400,
        body=image_request(data_url(b"%PDF-1.4 no")),
        code="invalid_image",
        param=part,
    )
    yield Case(
        "image-truncated-png",
        400,
        body=image_request(data_url(png[: len(png) // 2])),
        code="invalid_image",
    )
    yield Case("image-empty-data", 400, body=image_request("data:image/png;base64,"))
    yield Case("image-data-prefix-only", 400, body=image_request("data:"))
    yield Case(
        "image-svg",
        400,
        body=image_request(data_url(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml")),
    )
    yield Case(
        "image-remote-not-allowed",
        400,
        body=image_request("https://example.org/x.png"),
        code="image_url_not_allowed",
    )
    yield Case(
        "image-file-url",
        400,
        body=image_request("file:///etc/passwd"),
        code="image_url_not_allowed",
    )
    yield Case("image-ftp-url", 400, body=image_request("ftp://example.org/x.png"))
    yield Case("image-javascript-url", 400, body=image_request("javascript:alert(1)"))
    yield Case(
        "image-header-bomb", 400, body=image_request(data_url(png_header_bomb(100_000, 100_000)))
    )
    yield Case("image-extreme-aspect", 400, body=image_request(image_data_url(3000, 10)))
    many = [image_part(image_data_url(56, 56, seed=i)) for i in range(MAX_IMAGES + 1)]
    yield Case("image-too-many", 400, body=user(many), code="too_many_images", param="messages")
    yield Case("image-tiny-1px", 200, body=image_request(image_data_url(1, 1)), bound_s=30)
    yield Case(
        "image-bare-string-form",
        200,
        body=user([{"type": "image_url", "image_url": data_url(png)}]),
        bound_s=30,
    )
    # Decompression inside the caps: big, cheap to send, costly to decode. The token cost is
    # known from the header, so these are refused before decoding.
    count = 4 if long else 1
    yield Case(
        f"image-{count}x-12000px-png",
        400,
        build=lambda: user([image_part(data_url(blank_png(12_000, 12_000)))] * count),
        code="context_length_exceeded",
        needs_fidelity=True,
    )


def blank_png(width: int, height: int) -> bytes:
    """A real, fully decodable grayscale PNG that compresses to almost nothing."""
    import zlib

    row = b"\x00" + b"\x00" * width
    compressed = zlib.compress(row * height, 9)
    return _png(width, height, compressed)


def png_header_bomb(width: int, height: int) -> bytes:
    import zlib

    return _png(width, height, zlib.compress(b"\x00" * 1024))


def _png(width: int, height: int, idat: bytes) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------------- sizes


def sizes(long: bool) -> Iterator[Case]:
    text_mb = 50 if long else 10
    yield Case(
        f"text-{text_mb}mb-content",
        400,
        build=lambda: user("chest " * (text_mb * MB // 6)),
        code="context_length_exceeded",
        needs_fidelity=True,
    )
    yield Case(
        "text-1mb-content",
        400,
        build=lambda: user("chest " * (MB // 6)),
        code="context_length_exceeded",
        needs_fidelity=True,
    )
    parts = {"type": "text", "text": "lung "}
    yield Case(
        "text-50k-parts",
        400,
        build=lambda: user([parts] * 50_000),
        code="context_length_exceeded",
    )
    message = {"role": "user", "content": "hi"}
    yield Case(
        "messages-20k",
        400,
        build=lambda: chat(messages=[message] * 20_000),
        code="context_length_exceeded",
    )
    yield Case("stop-huge-sequence", 200, build=lambda: chat(stop="x" * 100_000), bound_s=30)
    yield Case("user-1mb", 200, build=lambda: chat(user="u" * MB), bound_s=30)
    yield Case("unknown-field-5mb", 200, build=lambda: chat(padding="p" * (5 * MB)), bound_s=30)
    yield Case(
        "image-over-byte-cap",
        400,
        build=lambda: image_request(
            "data:image/png;base64," + base64.b64encode(bytes(40 * MB)).decode()
        ),
        code="image_too_large",
    )


# ------------------------------------------------------------------------- JSON schemas

BAD_SCHEMAS: dict[str, dict[str, Any]] = {
    "invalid-pattern": {"type": "string", "pattern": "(["},
    "unresolvable-ref": {"$ref": "#/$defs/missing"},
    "minimum-over-maximum": {"type": "integer", "minimum": 10, "maximum": 1},
    "empty-enum": {"enum": []},
    "unknown-type": {"type": "tensor"},
}


def schemas() -> Iterator[Case]:
    for name, schema in BAD_SCHEMAS.items():
        for whitespace in (False, True):
            fmt = {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}
            if whitespace:
                fmt["allow_whitespace"] = True
            body = chat(response_format=fmt)
            suffix = "-whitespace" if whitespace else ""
            yield Case(
                f"schema-{name}{suffix}",
                400,
                body=body,
                param="response_format",
                needs_fidelity=not whitespace,
            )
    ok = {"type": "object", "properties": {"finding": {"type": "string"}}, "required": ["finding"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "r", "schema": ok}}
    yield Case("schema-valid", 200, body=chat(response_format=fmt, max_tokens=16), bound_s=30)


def corpus(long: bool) -> list[Case]:
    cases = [
        *wrong_types(),
        *nested_wrong(),
        *values(),
        *unicode_cases(),
        *bodies(),
        *auth_cases(),
        *routes(),
        *images(long),
        *sizes(long),
        *schemas(),
    ]
    ids = [case.id for case in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return cases
