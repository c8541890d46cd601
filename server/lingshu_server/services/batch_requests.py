"""One line of a batch, run through the live endpoint's own service: the same validation, images,
DICOM and DICOMweb references, tools and structured output, and the same answer a client of
the live route would get, with its status code. Only the scheduling differs: the line runs at
the batch's priority, below people, as the person who created the batch."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from lingshu_server.core import request_context
from lingshu_server.core.errors import (
    APIError,
    InternalServerError,
    RetryLaterError,
    validation_error,
)
from lingshu_server.core.request_context import RequestContext
from lingshu_server.protocol.chat import ChatCompletionRequest
from lingshu_server.protocol.completions import CompletionRequest
from lingshu_server.protocol.responses import ResponsesRequest
from lingshu_server.services.batch_lines import BATCH_ENDPOINTS
from lingshu_server.services.chat import ChatService
from lingshu_server.services.completions import CompletionService
from lingshu_server.services.responses import ResponsesService
from lingshu_server.storage.batch_store import Caller

logger = logging.getLogger(__name__)


class RetryLineError(Exception):
    """The server could not run the line now (overloaded, engine or database away): try it
    again later rather than write an error a client would have retried."""

    def __init__(self, error: RetryLaterError):
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class LineAnswer:
    custom_id: str
    line_id: str  # the output line's `id` (the request id of the line's run)
    status_code: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


@dataclass(frozen=True)
class LiveServices:
    """The services behind the live routes, as the app wired them."""

    chat: ChatService
    responses: ResponsesService
    completions: CompletionService

    def call(self, endpoint: str, body: Any) -> Awaitable[BaseModel]:
        """The live endpoint's own non-streaming call on a JSON body (ValidationError if the
        body is not one the route would take)."""
        request = BATCH_ENDPOINTS[endpoint].model_validate(body)
        if isinstance(request, ChatCompletionRequest):
            return self.chat.complete(request)
        if isinstance(request, ResponsesRequest):
            return self.responses.create(request)
        assert isinstance(request, CompletionRequest)
        return self.completions.complete(request)


class BatchLines:
    def __init__(
        self,
        services: LiveServices,
        *,
        priority: int,
        on_start: Callable[[RequestContext], None] | None = None,
        on_done: Callable[[RequestContext, float], None] | None = None,
    ):
        self._services = services
        self._priority = priority
        self._on_start = on_start  # the caller's token quota, charged as a live request's is
        self._on_done = on_done  # the audit log's record of the line, like a live request's

    async def run(self, endpoint: str, raw: bytes, caller: Caller) -> LineAnswer:
        """The line's answer. RetryLineError when the server cannot run it now."""
        # validated when the file was uploaded; megabytes of base64 maybe: off the event loop
        line = await asyncio.to_thread(json.loads, raw)
        line_id = f"batch_req_{uuid.uuid4().hex}"
        ctx = RequestContext(
            request_id=line_id,
            method="POST",
            route=endpoint,
            key_id=caller.key_id,
            identity=caller.identity,
            tenant=caller.tenant,
            priority=self._priority,
        )
        if self._on_start is not None:
            self._on_start(ctx)
        token = request_context.current.set(ctx)
        started = time.perf_counter()
        try:
            status, body = await self._answer(endpoint, line.get("body"))
        finally:
            request_context.current.reset(token)
        ctx.status = status
        if self._on_done is not None:
            self._on_done(ctx, time.perf_counter() - started)
        return LineAnswer(str(line["custom_id"]), line_id, status, body)

    async def _answer(self, endpoint: str, body: Any) -> tuple[int, dict[str, Any]]:
        try:
            answer = await self._services.call(endpoint, body)
        except ValidationError as exc:
            error = validation_error(exc)  # the live route's 400 for such a body
            return int(error.status), error.body().model_dump(mode="json")
        except RetryLaterError as exc:
            raise RetryLineError(exc) from None
        except APIError as exc:
            return int(exc.status), exc.body().model_dump(mode="json")
        except Exception as exc:  # a bug: the line fails as the live route's 500 would
            logger.error("batch line failed", extra={"fields": {"error": type(exc).__name__}})
            internal = InternalServerError("internal server error")
            return int(internal.status), internal.body().model_dump(mode="json")
        return 200, answer.model_dump(mode="json", by_alias=True)
