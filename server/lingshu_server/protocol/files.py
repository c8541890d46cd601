"""OpenAI Files API wire models: the file object, its list page and the deletion answer."""

from __future__ import annotations

from typing import Literal

from lingshu_server.protocol.common import ResponseModel

# What an upload may be for: `batch` input (checked line by line), or `user_data` (kept as
# sent). `batch_output` files are what a batch writes; nobody uploads one.
UPLOAD_PURPOSES = ("batch", "user_data")
FilePurpose = Literal["batch", "user_data", "batch_output"]


class FileObject(ResponseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    status_details: None = None
    expires_at: int | None = None


class FileList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool

    @classmethod
    def of(cls, files: list[FileObject], *, has_more: bool) -> FileList:
        return cls(
            data=files,
            first_id=files[0].id if files else None,
            last_id=files[-1].id if files else None,
            has_more=has_more,
        )


class FileDeleted(ResponseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: Literal[True] = True
