"""HTTP routes: thin; fetch services from app.state, call once, return JSON or SSE."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from lingshu_server import __version__
from lingshu_server.core import request_context
from lingshu_server.core.errors import (
    DrainingError,
    EngineUnavailableError,
    UnsupportedMediaTypeError,
)
from lingshu_server.core.lifecycle import Lifecycle, Stage
from lingshu_server.engine.vllm_engine import vllm_version
from lingshu_server.http.auth import require_api_key
from lingshu_server.http.openapi import (
    CHAT_RESPONSES,
    COMPLETION_RESPONSES,
    PREVIEW_RESPONSES,
    REPORT_RESPONSES,
    REPORT_STORE_RESPONSES,
    RESPONSES_RESPONSES,
    TOKENIZE_RESPONSES,
    V1_RESPONSES,
)
from lingshu_server.protocol.chat import ChatCompletion, ChatCompletionRequest
from lingshu_server.protocol.common import ModelList, ServerStatus
from lingshu_server.protocol.completions import Completion, CompletionRequest
from lingshu_server.protocol.preview import PreviewRequest, PreviewResponse
from lingshu_server.protocol.reports import ReportRequest, ReportResponse
from lingshu_server.protocol.responses import ResponsesRequest, ResponsesResponse
from lingshu_server.protocol.tokenize import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from lingshu_server.services.chat import ChatService
from lingshu_server.services.completions import CompletionService
from lingshu_server.services.preview import PreviewService
from lingshu_server.services.reports import ReportService
from lingshu_server.services.responses import ResponsesService
from lingshu_server.services.tokenization import TokenizeService

T = TypeVar("T")
# Dependencies are `async def` on purpose: FastAPI runs plain `def` dependencies in a thread
# pool, a thread hop per dependency per request for work that takes microseconds.
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
STATUS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ServerStatus, "description": "Serving"},
    503: {"model": ServerStatus, "description": "Not serving: the stage says why"},
}


DATABASE_CHECK_S = 3.0


async def _lifecycle(request: Request) -> Lifecycle:
    return request.app.state.lifecycle


LifecycleDep = Annotated[Lifecycle, Depends(_lifecycle)]


async def require_ready(lifecycle: LifecycleDep) -> None:
    """New work only while ready: 503 (with Retry-After) while loading, draining or dead."""
    if lifecycle.stage is Stage.DRAINING:
        raise DrainingError("the server is shutting down; retry on another replica")
    if not lifecycle.ready:
        raise EngineUnavailableError(
            f"the model is not ready (stage: {lifecycle.stage.value})",
            code="model_loading" if lifecycle.stage is not Stage.ENGINE_DEAD else None,
        )


async def check_rate_limit(request: Request) -> None:
    limiter = request.app.state.rate_limiter
    ctx = request_context.get()
    caller = ctx.identity or ctx.key_id if ctx is not None else None
    if limiter is not None and caller is not None:
        limiter.check(caller)


async def require_json(request: Request) -> None:
    content_type = request.headers.get("content-type")
    if content_type is None:
        raise UnsupportedMediaTypeError(
            "the request has no Content-Type header; send the body as JSON with "
            "Content-Type: application/json"
        )
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise UnsupportedMediaTypeError(
            f"Content-Type {content_type.split(';', 1)[0].strip()[:100]!r} is not supported; "
            "send the request body as JSON with Content-Type: application/json"
        )


async def _chat_service(request: Request) -> ChatService:
    return request.app.state.chat_service


async def _completion_service(request: Request) -> CompletionService:
    return request.app.state.completion_service


async def _tokenize_service(request: Request) -> TokenizeService:
    return request.app.state.tokenize_service


async def _responses_service(request: Request) -> ResponsesService:
    return request.app.state.responses_service


async def _preview_service(request: Request) -> PreviewService:
    return request.app.state.preview_service


async def _report_service(request: Request) -> ReportService:
    return request.app.state.report_service


ChatServiceDep = Annotated[ChatService, Depends(_chat_service)]
ResponsesServiceDep = Annotated[ResponsesService, Depends(_responses_service)]
CompletionServiceDep = Annotated[CompletionService, Depends(_completion_service)]
TokenizeServiceDep = Annotated[TokenizeService, Depends(_tokenize_service)]
PreviewServiceDep = Annotated[PreviewService, Depends(_preview_service)]
ReportServiceDep = Annotated[ReportService, Depends(_report_service)]

v1 = APIRouter(
    prefix="/v1",
    dependencies=[Depends(require_api_key), Depends(check_rate_limit), Depends(require_ready)],
    responses=V1_RESPONSES,
)
# vLLM serves these beside /v1, with the same keys, limits and readiness
tokens = APIRouter(
    dependencies=[Depends(require_api_key), Depends(check_rate_limit), Depends(require_ready)],
    responses=TOKENIZE_RESPONSES,
)
public = APIRouter()
# Open to anyone whatever else is protected: the orchestrator's probes carry no credential.
PROBE_PATHS = ("/health", "/ready")


async def until_disconnected(request: Request, work: Awaitable[T]) -> T | Response:
    """Run `work`, but cancel it (aborting the engine request) if the client goes away."""
    task = asyncio.ensure_future(work)

    async def client_gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(client_gone())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    # Let its clean-up (engine abort, admission slot) finish before the response is logged.
    with contextlib.suppress(BaseException):
        await task
    ctx = request_context.get()
    if ctx is not None:
        ctx.client_disconnected = True
    return Response(status_code=499)


async def answer(request: Request, work: Awaitable[Any], stream: bool) -> Any:
    """`work`'s answer; with `stream`, its events (an async iterator) as SSE. Until the first
    token the client can leave (queued, images loading, prefill): watch for it like a plain
    request; from then on StreamingResponse notices the disconnect."""
    result = await until_disconnected(request, work)
    if not stream or isinstance(result, Response):
        return result
    return StreamingResponse(result, media_type="text/event-stream", headers=SSE_HEADERS)


@v1.post(
    "/chat/completions",
    response_model=None,
    dependencies=[Depends(require_json)],
    responses=CHAT_RESPONSES,
)
async def create_chat_completion(
    request: Request, body: ChatCompletionRequest, chat: ChatServiceDep
) -> ChatCompletion | Response:
    work = chat.stream(body) if body.stream else chat.complete(body)
    return await answer(request, work, bool(body.stream))


@v1.post(
    "/responses",
    response_model=None,
    dependencies=[Depends(require_json)],
    responses=RESPONSES_RESPONSES,
)
async def create_response(
    request: Request, body: ResponsesRequest, responses: ResponsesServiceDep
) -> ResponsesResponse | Response:
    """OpenAI's Responses API, stateless (`store` false)."""
    work = responses.stream(body) if body.stream else responses.create(body)
    return await answer(request, work, bool(body.stream))


@v1.post(
    "/completions",
    response_model=None,
    dependencies=[Depends(require_json)],
    responses=COMPLETION_RESPONSES,
)
async def create_completion(
    request: Request, body: CompletionRequest, completions: CompletionServiceDep
) -> Completion | Response:
    """OpenAI's (legacy) completions, as vLLM serves them: text or token ids in, text out."""
    work = completions.stream(body) if body.stream else completions.complete(body)
    return await answer(request, work, bool(body.stream))


@tokens.post("/tokenize", response_model=TokenizeResponse, dependencies=[Depends(require_json)])
async def tokenize(
    request: Request, body: TokenizeRequest, service: TokenizeServiceDep
) -> TokenizeResponse | Response:
    """vLLM's: a prompt's or a chat's token ids as the engine sees them (each image and video
    counted in full), `count` and the context size `max_model_len`."""
    return await until_disconnected(request, service.tokenize(body))


@tokens.post("/detokenize", response_model=DetokenizeResponse, dependencies=[Depends(require_json)])
async def detokenize(
    request: Request, body: DetokenizeRequest, service: TokenizeServiceDep
) -> DetokenizeResponse | Response:
    """vLLM's: token ids back to text."""
    return await until_disconnected(request, service.detokenize(body))


@v1.post(
    "/images/preview",
    response_model=None,
    dependencies=[Depends(require_json)],
    responses=PREVIEW_RESPONSES,
)
async def preview_image(
    request: Request, body: PreviewRequest, preview: PreviewServiceDep
) -> PreviewResponse | Response:
    """One chat content part (`image_url` or `video_url`) -> the pixels the model sees."""
    return await until_disconnected(request, preview.preview(body))


@v1.post(
    "/reports",
    response_model=None,
    dependencies=[Depends(require_json)],
    responses=REPORT_RESPONSES,
)
async def create_report(
    request: Request, body: ReportRequest, reports: ReportServiceDep
) -> ReportResponse | Response:
    """A draft report for a study (an extension): its text with Findings and Impression, a
    FHIR R4 Bundle and a DICOM SR, optionally stored into the study's PACS."""
    work = reports.stream(body) if body.stream else reports.create(body)
    return await answer(request, work, bool(body.stream))


@v1.post("/reports/{report_id}/store", response_model=None, responses=REPORT_STORE_RESPONSES)
async def store_report(
    request: Request, report_id: str, reports: ReportServiceDep
) -> ReportResponse | Response:
    """Store a drafted report's SR, exactly as drafted, into its study's PACS (STOW-RS)."""
    return await until_disconnected(request, reports.store(report_id))


@v1.get("/models")
async def list_models(request: Request) -> ModelList:
    return request.app.state.models.cards()


@public.get("/health", responses=STATUS_RESPONSES)
async def health(request: Request, lifecycle: LifecycleDep) -> JSONResponse:
    """Liveness (and startup): 200 while the engine is up; 503 with the stage otherwise. Once
    the database of stored state is in use, `database` says whether it answers (a database
    away does not fail liveness: the model still serves)."""
    body = lifecycle.status()
    database = request.app.state.database
    if database.opened:
        # The last request's word on it; only after a failure is the database asked again
        # (so a probe costs nothing while all is well, and sees the recovery).
        problem = database.last_error
        if problem is not None:
            try:
                problem = await asyncio.wait_for(database.check(), DATABASE_CHECK_S)
            except TimeoutError:
                problem = f"the database ({database.kind}) did not answer in {DATABASE_CHECK_S:g} s"
        body["database"] = problem or "ok"
    return JSONResponse(body, status_code=200 if lifecycle.serving else 503)


@public.get("/ready", responses=STATUS_RESPONSES)
async def ready(lifecycle: LifecycleDep) -> JSONResponse:
    """Readiness: 200 only when new requests are welcome (loaded, not draining)."""
    return JSONResponse(lifecycle.status(), status_code=200 if lifecycle.ready else 503)


@public.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus text format"}},
)
async def metrics(request: Request) -> Response:
    ours = request.app.state.metrics.exposition()
    engine_metrics = request.app.state.engine_factory.metrics_exposition()
    return Response(ours + engine_metrics, media_type=PROMETHEUS_TEXT)


@public.get("/version")
async def version() -> dict[str, str]:
    return {"version": __version__, "vllm_version": vllm_version()}
