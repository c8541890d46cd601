"""The Files API: uploads streamed to the database as they arrive (a `batch` file checked line
by line on the way), read back, listed and deleted, each owned by whoever uploaded it (another
owner's file is not found, exactly as a missing one). Each create, read and delete is noted for
the audit log: the file's id, never its content."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from lingshu_server.core.errors import InvalidFileError, NotFoundError
from lingshu_server.protocol.files import UPLOAD_PURPOSES, FileDeleted, FileList, FileObject
from lingshu_server.services.batch_lines import BatchLineChecker
from lingshu_server.services.request_records import current_owner, note_stored
from lingshu_server.storage.file_store import FileFacts, FileStore, StoredFile
from lingshu_server.storage.paging import Order

SEND_BYTES = 256 * 1024


@dataclass
class Upload:
    """A form upload as it streams: the file part's name and data, and the form's other fields
    (filled as the form is read: complete once `content` is exhausted)."""

    filename: str
    content: AsyncIterator[bytes]
    fields: Mapping[str, str]


class FileService:
    def __init__(self, store: FileStore, *, max_line_bytes: int) -> None:
        self._store = store
        self._max_line_bytes = max_line_bytes

    async def create(self, upload: Upload) -> FileObject:
        checker = BatchLineChecker(max_line_bytes=self._max_line_bytes)
        size = 0

        async def checked() -> AsyncIterator[bytes]:
            nonlocal size
            async for data in upload.content:
                purpose = upload.fields.get("purpose")
                if purpose is not None:
                    _upload_purpose(purpose)  # a purpose refused is refused at once
                if purpose == "batch" and checker.quiet:
                    checker.raise_first()  # fail at the first bad line once the purpose is known
                if purpose is None or purpose == "batch":
                    # JSON and request models over lines that may hold megabytes of base64:
                    # off the event loop
                    await asyncio.to_thread(checker.feed, data)
                size += len(data)
                yield data

        def facts() -> FileFacts:
            purpose = _upload_purpose(upload.fields.get("purpose"))
            if purpose == "batch":
                checker.raise_first()
                checker.finish()
                checker.raise_first()
            elif size == 0:
                raise InvalidFileError("the file is empty", code="empty_file")
            if purpose == "batch":
                return FileFacts(purpose, upload.filename, checker.endpoint, checker.requests)
            return FileFacts(purpose, upload.filename)

        stored = await self._store.create(owner=current_owner(), chunks=checked(), facts=facts)
        note_stored("create", stored.id)
        return file_object(stored)

    async def retrieve(self, file_id: str) -> FileObject:
        stored = await self._owned(file_id)
        note_stored("read", file_id)
        return file_object(stored)

    async def list(
        self, *, purpose: str | None, after: str | None, limit: int, order: Order
    ) -> FileList:
        page = await self._store.list(
            current_owner(), purpose=purpose, after=after, limit=limit, order=order
        )
        listed = [file_object(StoredFile(**fields)) for fields in page.data]
        return FileList.of(listed, has_more=page.has_more)

    async def content(self, file_id: str) -> AsyncIterator[bytes]:
        """The file's content, streamed (ownership checked before the first byte), in pieces
        small enough that the socket's buffer never holds much of it."""
        await self._owned(file_id)
        note_stored("read", file_id)
        return _pieces(self._store.content(file_id))

    async def delete(self, file_id: str) -> FileDeleted:
        if not await self._store.delete(file_id, current_owner()):
            raise _missing(file_id)
        note_stored("delete", file_id)
        return FileDeleted(id=file_id)

    async def _owned(self, file_id: str) -> StoredFile:
        stored = await self._store.get(file_id, current_owner())
        if stored is None:
            raise _missing(file_id)
        return stored


async def _pieces(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        for start in range(0, len(chunk), SEND_BYTES):
            yield chunk[start : start + SEND_BYTES]


def file_object(stored: StoredFile) -> FileObject:
    return FileObject(
        id=stored.id,
        bytes=stored.bytes,
        created_at=int(stored.created_at),
        filename=stored.filename,
        purpose=stored.purpose,
        expires_at=int(stored.expires_at) if stored.expires_at is not None else None,
    )


def _upload_purpose(purpose: str | None) -> str:
    if purpose is None:
        raise InvalidFileError(
            "the form has no `purpose` field (batch or user_data)",
            param="purpose",
            code="missing_required_parameter",
        )
    if purpose not in UPLOAD_PURPOSES:
        raise InvalidFileError(
            f"purpose must be one of {', '.join(UPLOAD_PURPOSES)}; this server uses files for "
            "batches only",
            param="purpose",
            code="invalid_purpose",
        )
    return purpose


def _missing(file_id: str) -> NotFoundError:
    return NotFoundError(f"No such File object: {file_id}", param="file_id")
