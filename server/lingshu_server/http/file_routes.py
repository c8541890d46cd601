"""The Files API's routes, with the same keys and rate limits as /v1. An upload is read as it
arrives (multipart, streamed to the database; its cap is --max-file-bytes, not
--max-request-bytes); content is streamed back. They need the database, not the engine."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from lingshu_server.http.auth import require_api_key
from lingshu_server.http.multipart_form import StreamedForm
from lingshu_server.http.openapi import error_responses
from lingshu_server.http.routes import check_rate_limit
from lingshu_server.protocol.files import UPLOAD_PURPOSES, FileDeleted, FileList, FileObject
from lingshu_server.services.files import FileService, Upload

FILES_PATH = "/v1/files"
UPLOAD_FORM: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "The file; for `batch`, JSONL: one request a line",
                        },
                        "purpose": {"type": "string", "enum": list(UPLOAD_PURPOSES)},
                    },
                }
            }
        },
    }
}

files = APIRouter(
    prefix="/v1",
    dependencies=[Depends(require_api_key), Depends(check_rate_limit)],
    responses=error_responses(400, 401, 404, 429, 507),
)


async def _files(request: Request) -> FileService:
    return request.app.state.file_service


FilesDep = Annotated[FileService, Depends(_files)]


@files.post(
    "/files", openapi_extra=UPLOAD_FORM, responses=error_responses(415), response_model=FileObject
)
async def create_file(request: Request, service: FilesDep) -> FileObject:
    """Upload a file (multipart `file` and `purpose`); a `batch` file is checked line by line."""
    form = StreamedForm(request.stream(), request.headers.get("content-type"), "file")
    filename = await form.open()
    return await service.create(Upload(filename, form.file_data(), form.fields))


@files.get("/files")
async def list_files(
    service: FilesDep,
    purpose: Annotated[str | None, Query(max_length=40, description="Only this purpose.")] = None,
    after: Annotated[str | None, Query(description="A file id: list the files after it.")] = None,
    limit: Annotated[int, Query(ge=1, le=10000, description="Files per page.")] = 10000,
    order: Annotated[Literal["asc", "desc"], Query(description="Oldest or newest first.")] = "desc",
) -> FileList:
    return await service.list(purpose=purpose, after=after, limit=limit, order=order)


@files.get("/files/{file_id}")
async def retrieve_file(file_id: str, service: FilesDep) -> FileObject:
    return await service.retrieve(file_id)


@files.get(
    "/files/{file_id}/content",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The content"}},
)
async def file_content(file_id: str, service: FilesDep) -> StreamingResponse:
    return StreamingResponse(await service.content(file_id), media_type="application/octet-stream")


@files.delete("/files/{file_id}")
async def delete_file(file_id: str, service: FilesDep) -> FileDeleted:
    return await service.delete(file_id)
