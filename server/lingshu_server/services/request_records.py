"""What a request leaves for the access log, the audit log and metrics: its prompt (tokens,
images, preprocessing time), its usage, a disconnect, a failure after the 200."""

from __future__ import annotations

from collections.abc import Iterable

from lingshu_server.core import request_context
from lingshu_server.core.errors import APIError
from lingshu_server.core.metrics import Metrics
from lingshu_server.services.chat_prompt import ChatPrompt
from lingshu_server.services.generation import elapsed_since
from lingshu_server.services.input_records import record_inputs


def record_text_prompt(metrics: Metrics, prompt_tokens: int, started: float) -> None:
    """A prompt's tokens and the time it took to prepare (fetch, decode, template, tokenize)."""
    metrics.preprocess.observe(elapsed_since(started))
    ctx = request_context.get()
    if ctx is not None:
        ctx.prompt_tokens = prompt_tokens


def record_prompt(metrics: Metrics, prompt: ChatPrompt, started: float) -> None:
    """A chat prompt: the above, and each image and video (the audit log's records)."""
    record_text_prompt(metrics, prompt.num_tokens, started)
    record_inputs(metrics, prompt.images, prompt.videos)


def note_usage(completion_tokens: int) -> None:
    ctx = request_context.get()
    if ctx is not None:
        ctx.completion_tokens = completion_tokens


def note_cached(tokens: int) -> None:
    """Prompt tokens the engine found in its prefix cache (counted by Metrics)."""
    ctx = request_context.get()
    if ctx is not None:
        ctx.cached_tokens += tokens


def note_stored(action: str, object_id: str, hashes: Iterable[str] = ()) -> None:
    """A stored object created, read or deleted, for the audit log: its id and the SHA-256 of
    the images it holds, never its content."""
    ctx = request_context.get()
    if ctx is not None:
        ctx.stored.append({"action": action, "id": object_id, "sha256": sorted(set(hashes))})


def current_owner() -> str:
    ctx = request_context.get()
    return ctx.owner if ctx is not None else "anonymous"


def note_disconnect() -> None:
    ctx = request_context.get()
    if ctx is not None:
        ctx.client_disconnected = True


def note_stream_error(exc: APIError) -> None:
    """A stream that fails after its 200 is logged and counted with the error's status."""
    ctx = request_context.get()
    if ctx is not None:
        ctx.status = int(exc.status)
        ctx.stream_error = exc.code or exc.type
