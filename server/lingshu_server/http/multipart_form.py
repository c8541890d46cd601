"""A multipart/form-data upload read as it streams in (python-multipart's push parser over the
request's body): the small fields are kept, the one file part's data is handed on piece by
piece, so a file of any size passes through in the memory of a few network reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from lingshu_server.core.errors import InvalidRequestError, UnsupportedMediaTypeError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MAX_FIELD_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024


class StreamedForm:
    """Read `body` up to the file part (`open`), then its data (`file_data`), which goes on to
    read the rest of the form before it ends: after it, `fields` holds every field."""

    def __init__(self, body: AsyncIterator[bytes], content_type: str | None, file_field: str):
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise UnsupportedMediaTypeError(
                "send the file as multipart/form-data, with `file` and `purpose` fields"
            )
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self._body = body
        self._file_field = file_field
        self._in_file = False
        self._file_seen = False
        self._ended = False
        self._pieces: list[bytes] = []
        self._field_name: str | None = None
        self._field_value = bytearray()
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, bytes] = {}
        callbacks: MultipartCallbacks = {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }
        self._parser = MultipartParser(boundary, callbacks)

    async def open(self) -> str:
        """Read up to the file part's data; the file's name."""
        while self.filename is None:
            if not await self._read():
                raise InvalidRequestError(
                    f"the form has no `{self._file_field}` part (the file to upload)",
                    param=self._file_field,
                    code="missing_required_parameter",
                )
        return self.filename

    async def file_data(self) -> AsyncIterator[bytes]:
        """The file part's data as it arrives, then (quietly) the rest of the form."""
        while True:
            pieces, self._pieces = self._pieces, []
            for piece in pieces:
                yield piece
            if not await self._read():
                return

    async def _read(self) -> bool:
        """Feed the parser the next piece of the body; False at its end."""
        if self._ended:
            return False
        data = await anext(self._body, None)
        if data is None:
            raise InvalidRequestError("the multipart form ends before its closing boundary")
        try:
            self._parser.write(data)
        except MultipartParseError:
            raise InvalidRequestError("the multipart form is malformed") from None
        return True

    # ---------------------------------------------------------------- parser callbacks

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]
        self._check_header_size()

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        self._check_header_size()

    def _check_header_size(self) -> None:
        if len(self._header_field) + len(self._header_value) > MAX_HEADER_BYTES:
            raise InvalidRequestError("a header of the multipart form is too long")

    def _header_end(self) -> None:
        name = self._header_field.decode("latin-1").lower()
        self._headers[name] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition"))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == self._file_field and b"filename" in options:
            if self._file_seen:
                raise InvalidRequestError(
                    f"the form holds more than one `{self._file_field}`; upload one file at once",
                    param=self._file_field,
                )
            self._file_seen = True
            self._in_file = True
            self.filename = options[b"filename"].decode("utf-8", "replace")[:1000] or "upload"
        else:
            self._field_name = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pieces.append(data[start:end])
            return
        self._field_value += data[start:end]
        if len(self._field_value) > MAX_FIELD_BYTES:
            raise InvalidRequestError(
                f"the form field `{self._field_name}` is longer than {MAX_FIELD_BYTES} bytes"
            )

    def _part_end(self) -> None:
        if self._in_file:
            self._in_file = False
        elif self._field_name:
            self.fields[self._field_name] = self._field_value.decode("utf-8", "replace")
        self._field_name = None
        self._field_value.clear()

    def _end(self) -> None:
        self._ended = True
