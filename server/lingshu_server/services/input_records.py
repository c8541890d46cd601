"""What a request's images and videos leave behind: audit records (on the request's context)
and the image metrics. Shared by every endpoint that decodes inputs (chat, preview)."""

from __future__ import annotations

from collections.abc import Sequence

from lingshu_server.core import request_context
from lingshu_server.core.metrics import Metrics
from lingshu_server.core.request_context import ImageRecord
from lingshu_server.inputs.media import PreparedImage
from lingshu_server.inputs.video import PreparedVideo


def record_inputs(
    metrics: Metrics, images: Sequence[PreparedImage], videos: Sequence[PreparedVideo] = ()
) -> None:
    ctx = request_context.get()
    if ctx is not None:
        inputs: list[PreparedImage | PreparedVideo] = [*images, *videos]
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
            for item in inputs
        ]
    if images:
        metrics.record_images(
            [(image.source_format, image.seconds) for image in images],
            encoded=sum(image.encoded_bytes for image in images),
            pixels=sum(w * h for w, h in (image.source_size for image in images)),
            tokens=sum(image.num_tokens for image in images),
        )
