"""A `batch` file's lines, checked as its bytes stream past (never the whole file held): each
non-blank line a JSON object with a `custom_id` of its own, `method` POST, the same `url` on
every line (one of the three batchable endpoints) and a `body` that endpoint's own request model
accepts, not streamed. A bad line is named by its number and what is wrong with it; its content
is never quoted (it may be patient data)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ValidationError

from lingshu_server.core.errors import InvalidFileError, validation_error
from lingshu_server.protocol.chat import ChatCompletionRequest
from lingshu_server.protocol.completions import CompletionRequest
from lingshu_server.protocol.responses import ResponsesRequest

BATCH_ENDPOINTS: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/responses": ResponsesRequest,
    "/v1/completions": CompletionRequest,
}


class BatchLineChecker:
    """Fed the file's bytes as they arrive. `quiet` keeps the first bad line for later instead
    of raising (the form may name the purpose after the file); `raise_first` then raises it."""

    def __init__(self, *, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self.quiet = True
        self.error: InvalidFileError | None = None
        self.endpoint: str | None = None
        self.requests = 0  # non-blank lines
        self._line_number = 0
        self._pending = bytearray()
        # 64-bit digests, not the ids: millions of lines checked in tens of MB
        self._custom_ids: set[bytes] = set()

    def feed(self, data: bytes) -> None:
        if self.error is not None:
            return
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            if end < 0:
                self._pending += data[start:]
                if len(self._pending) > self.max_line_bytes:
                    self._fail(self._line_number + 1, self._too_long())
                return
            self._pending += data[start:end]
            start = end + 1
            self._line_number += 1
            line, self._pending = bytes(self._pending), bytearray()
            if not self._line_passes(line):
                return

    def finish(self) -> None:
        """The end of the file: its last line (without a newline) is checked, and an empty
        file refused."""
        if self.error is None and self._pending:
            self._line_number += 1
            line, self._pending = bytes(self._pending), bytearray()
            if not self._line_passes(line):
                return
        if self.error is None and self.requests == 0:
            self._fail(
                None,
                "the file holds no requests: a batch file has one JSON object a line",
                code="empty_file",
            )

    def raise_first(self) -> None:
        self.quiet = False
        if self.error is not None:
            raise self.error

    def _line_passes(self, line: bytes) -> bool:
        """Check one line (blank lines pass); False when it is refused."""
        if not line.strip():
            return True
        number = self._line_number
        if len(line) > self.max_line_bytes:
            self._fail(number, self._too_long())
            return False
        try:
            request = json.loads(line)
        except ValueError:
            self._fail(number, "not valid JSON", code="invalid_json_line")
            return False
        problem = self._problem(request)
        if problem is not None:
            self._fail(number, problem[0], code=problem[1])
            return False
        self.requests += 1
        return True

    def _problem(self, request: Any) -> tuple[str, str | None] | None:
        """What is wrong with a parsed line, and the error's code; None when it is right."""
        if not isinstance(request, dict):
            return "not a JSON object", "invalid_json_line"
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            return "custom_id must be a non-empty string", None
        digest = hashlib.blake2b(custom_id.encode(), digest_size=8).digest()
        if digest in self._custom_ids:
            return "custom_id is the same as an earlier line's; each must be unique", (
                "duplicate_custom_id"
            )
        self._custom_ids.add(digest)
        if request.get("method") != "POST":
            return 'method must be "POST"', None
        url = request.get("url")
        if not isinstance(url, str) or url not in BATCH_ENDPOINTS:
            return f"url must be one of {', '.join(BATCH_ENDPOINTS)}", "invalid_url"
        if self.endpoint is None:
            self.endpoint = url
        elif url != self.endpoint:
            return (
                f"url is {url} but earlier lines name {self.endpoint}; every line of a batch "
                "file names the same endpoint",
                "mismatched_url",
            )
        body = request.get("body")
        if not isinstance(body, dict):
            return "body must be a JSON object (the request to send)", None
        if body.get("stream") not in (None, False):
            return "body.stream must be absent or false: batch requests are not streamed", None
        try:
            BATCH_ENDPOINTS[url].model_validate(body)
        except ValidationError as exc:
            refused = validation_error(exc)
            return f"body: {refused.message}", refused.code
        return None

    def _too_long(self) -> str:
        return f"longer than {self.max_line_bytes} bytes, the largest request accepted"

    def _fail(self, number: int | None, problem: str, code: str | None = None) -> None:
        message = problem if number is None else f"line {number}: {problem}"
        self.error = InvalidFileError(message, code=code)
        if not self.quiet:
            raise self.error
