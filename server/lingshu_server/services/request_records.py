"""What a request leaves for the access log, the audit log and metrics: its prompt (tokens,
images, preprocessing time), its usage, a disconnect, a failure after the 200."""

from __future__ import annotations

from lingshu_server.api import request_context
from lingshu_server.api.errors import APIError
from lingshu_server.api.request_context import ImageRecord
from lingshu_server.inputs.media import PreparedImage
from lingshu_server.metrics import Metrics
from lingshu_server.services.chat import ChatPrompt
from lingshu_server.services.generation import elapsed_since


def record_text_prompt(metrics: Metrics, prompt_tokens: int, started: float) -> None:
    """A prompt's tokens and the time it took to prepare (fetch, decode, template, tokenize)."""
    metrics.preprocess.observe(elapsed_since(started))
    ctx = request_context.get()
    if ctx is not None:
        ctx.prompt_tokens = prompt_tokens


def record_prompt(metrics: Metrics, prompt: ChatPrompt, started: float) -> None:
    """A chat prompt: the above, and each image and video (the audit log's records)."""
    record_text_prompt(metrics, prompt.num_tokens, started)
    ctx = request_context.get()
    if ctx is not None:
        ctx.images = [
            ImageRecord(
                sha256=item.sha256,
                format=item.source_format
                if isinstance(item, PreparedImage)
                else f"{item.source_format} video",
                encoded_bytes=item.encoded_bytes,
                width=item.source_size[0],
                height=item.source_size[1],
                tokens=item.num_tokens,
                source=item.source,
            )
            for item in (*prompt.images, *prompt.videos)
        ]
    if prompt.images:
        metrics.record_images(
            [(image.source_format, image.seconds) for image in prompt.images],
            encoded=sum(image.encoded_bytes for image in prompt.images),
            pixels=sum(w * h for w, h in (image.source_size for image in prompt.images)),
            tokens=prompt.image_tokens,
        )


def note_usage(completion_tokens: int) -> None:
    ctx = request_context.get()
    if ctx is not None:
        ctx.completion_tokens = completion_tokens


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
