"""OpenAI's Batch API routes: create, retrieve, list and cancel batches, with the same keys and
rate limits as /v1. A batch reads a file uploaded to /v1/files and writes its answers to two
files there (output and errors), line by line as they finish."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from lingshu_server.http.auth import require_api_key
from lingshu_server.http.openapi import error_responses
from lingshu_server.http.routes import check_rate_limit, require_json
from lingshu_server.protocol.batches import BatchCreateRequest, BatchList, BatchObject
from lingshu_server.services.batches import BatchService

batch_routes = APIRouter(
    prefix="/v1",
    dependencies=[Depends(require_api_key), Depends(check_rate_limit)],
    responses=error_responses(400, 401, 404, 409, 429, 503, 507),
)


async def _batches(request: Request) -> BatchService:
    return request.app.state.batch_service


BatchesDep = Annotated[BatchService, Depends(_batches)]


@batch_routes.post("/batches", dependencies=[Depends(require_json)])
async def create_batch(body: BatchCreateRequest, batches: BatchesDep) -> BatchObject:
    """Run every line of a `batch` file through `endpoint`, below interactive requests."""
    return await batches.create(body)


@batch_routes.get("/batches/{batch_id}")
async def retrieve_batch(batch_id: str, batches: BatchesDep) -> BatchObject:
    return await batches.retrieve(batch_id)


@batch_routes.get("/batches")
async def list_batches(
    batches: BatchesDep,
    after: Annotated[str | None, Query(description="A batch id: list the older ones.")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Batches per page, 1 to 100.")] = 20,
) -> BatchList:
    """Your batches, newest first."""
    return await batches.list(after=after, limit=limit)


@batch_routes.post("/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, batches: BatchesDep) -> BatchObject:
    """Stop starting new lines (within a second); the finished ones stay in the output."""
    return await batches.cancel(batch_id)
