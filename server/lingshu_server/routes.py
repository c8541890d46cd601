"""HTTP routes: thin; fetch the service from app.state, call it once, return JSON or SSE."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from lingshu_server import __version__
from lingshu_server.engine import Engine, vllm_version
from lingshu_server.protocol import ChatCompletion, ChatCompletionRequest, ModelCard, ModelList
from lingshu_server.serving import ChatService

router = APIRouter()


def _chat_service(request: Request) -> ChatService:
    return request.app.state.chat_service


def _engine(request: Request) -> Engine:
    return request.app.state.engine


ChatServiceDep = Annotated[ChatService, Depends(_chat_service)]
EngineDep = Annotated[Engine, Depends(_engine)]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest, chat: ChatServiceDep
) -> ChatCompletion | StreamingResponse:
    if body.stream:
        events = await chat.stream(body)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    return await chat.complete(body)


@router.get("/v1/models")
async def list_models(request: Request, engine: EngineDep) -> ModelList:
    settings = request.app.state.settings
    return ModelList(
        data=[
            ModelCard(
                id=name,
                created=request.app.state.started_at,
                root=settings.model,
                max_model_len=engine.max_model_len,
            )
            for name in settings.served_model_names
        ]
    )


@router.get("/health")
async def health(engine: EngineDep) -> JSONResponse:
    if await engine.is_healthy():
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "engine_dead"}, status_code=503)


@router.get("/version")
async def version() -> dict[str, str]:
    return {"version": __version__, "vllm_version": vllm_version()}
