"""`POST /v1/images/preview`: one content part -> the pixels the model would see, and why.

The part takes chat's own path (ChatPromptBuilder's expand, probe and decode for images,
VideoInputs for videos), so the caps, the errors and the pixels are chat's. Where the engine's
processor resizes an image a second time, its own resize step is applied here too
(inputs/processor_resize.py), so the PNG returned is the vision encoder's input, before only
the processor's rescale and normalisation.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import asdict
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from lingshu_server.core.image_budget import PixelBudget
from lingshu_server.core.metrics import Metrics
from lingshu_server.inputs.dicom import DicomRendering
from lingshu_server.inputs.media import ImageLimits, PreparedImage
from lingshu_server.inputs.processor_resize import ProcessorResize
from lingshu_server.inputs.video import PreparedVideo
from lingshu_server.inputs.video_inputs import VideoInputs
from lingshu_server.protocol.common import ImagePart, VideoPart
from lingshu_server.protocol.preview import (
    AppliedWindowFacts,
    DicomFacts,
    ImagePreview,
    PixelRange,
    PreviewResponse,
    Resizing,
    SourceFacts,
    VideoFrame,
    VideoPreview,
    VideoSourceFacts,
)
from lingshu_server.services.chat_prompt import ChatPromptBuilder
from lingshu_server.services.input_records import record_inputs

T = TypeVar("T")
IMAGE_PARAM = "image_url"
VIDEO_PARAM = "video_url"
VIDEO_FRAMES_SHOWN = 8  # enough to see the sampling and the window; a few MB at most


def png_data_url(image: Image.Image | np.ndarray) -> str:
    """Lossless, so the client gets the exact pixels (fast compression: the bytes matter
    less than the latency of a preview)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image, "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def dicom_facts(rendering: DicomRendering | None) -> DicomFacts | None:
    if rendering is None:
        return None
    window = rendering.window
    return DicomFacts(
        modality=rendering.modality,
        photometric_interpretation=rendering.photometric_interpretation,
        frame=rendering.frame,
        frames=rendering.frames,
        window=AppliedWindowFacts(**asdict(window)) if window is not None else None,
    )


def shown_positions(sampled: int, most: int = VIDEO_FRAMES_SHOWN) -> list[int]:
    """Evenly spaced positions among the sampled frames, the first and the last included."""
    return sorted({int(p) for p in np.linspace(0, sampled - 1, min(sampled, most)).round()})


class PreviewService:
    def __init__(
        self,
        *,
        prompts: ChatPromptBuilder,
        videos: VideoInputs,
        limits: ImageLimits,
        processor_resize: ProcessorResize,
        pool: Executor,
        metrics: Metrics,
    ):
        self._prompts = prompts
        self._videos = videos
        self._limits = limits
        self._processor_resize = processor_resize
        self._pool = pool
        self._metrics = metrics

    async def preview(self, part: ImagePart | VideoPart) -> PreviewResponse:
        if isinstance(part, VideoPart):
            return await self._video(part)
        return await self._images(part)

    async def _in_pool(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _images(self, part: ImagePart) -> PreviewResponse:
        parts = await self._prompts.expand_images([(IMAGE_PARAM, part)])
        probed = await self._prompts.probe_images(parts)
        images = await self._prompts.decode_images(probed, parts)
        record_inputs(self._metrics, images)
        spec = part.image_url
        budget = self._limits.budget(spec.detail, spec.min_pixels, spec.max_pixels)
        previews = await asyncio.gather(
            *(self._in_pool(self._image_preview, image, budget) for image in images)
        )
        return PreviewResponse(
            type="image_url", tokens=sum(p.tokens for p in previews), images=list(previews)
        )

    def _image_preview(self, prepared: PreparedImage, budget: PixelBudget) -> ImagePreview:
        seen = prepared.image
        if prepared.resized_twice:
            seen = self._processor_resize(seen)
        if seen.size != prepared.size:  # the header arithmetic and the processor disagree
            raise RuntimeError("the processor's resize does not give the size counted")
        processor = self._limits.processor
        recipe_width, recipe_height = prepared.image.size
        return ImagePreview(
            image=png_data_url(seen),
            width=seen.width,
            height=seen.height,
            tokens=prepared.num_tokens,
            source=SourceFacts(
                format=prepared.source_format,
                bytes=prepared.encoded_bytes,
                width=prepared.source_size[0],
                height=prepared.source_size[1],
            ),
            resizing=Resizing(
                recipe_width=recipe_width,
                recipe_height=recipe_height,
                resized_twice=prepared.resized_twice,
                request_budget=PixelRange(**asdict(budget)),
                processor_budget=PixelRange(**asdict(processor)),
            ),
            dicom=dicom_facts(prepared.dicom),
        )

    async def _video(self, part: VideoPart) -> PreviewResponse:
        parts = [(VIDEO_PARAM, part)]
        self._videos.check(parts)
        (video,) = await self._videos.decode(await self._videos.plan(parts))
        record_inputs(self._metrics, [], [video])
        preview = await self._in_pool(video_preview, video)
        return PreviewResponse(type="video_url", tokens=preview.tokens, video=preview)


def video_preview(video: PreparedVideo) -> VideoPreview:
    meta = video.metadata
    indices: list[int] = list(meta["frames_indices"])
    fps, total = float(meta["fps"]), int(meta["total_num_frames"])
    _, height, width, _ = video.frames.shape
    return VideoPreview(
        width=width,
        height=height,
        tokens=video.num_tokens,
        sampled_frames=len(indices),
        sample_fps=len(indices) / total * fps,
        frame_indices=indices,
        shown=[
            VideoFrame(
                position=position,
                source_frame=indices[position],
                time_s=indices[position] / fps,
                image=png_data_url(video.frames[position]),
            )
            for position in shown_positions(len(indices))
        ],
        source=VideoSourceFacts(
            format=video.source_format,
            bytes=video.encoded_bytes,
            width=video.source_size[0],
            height=video.source_size[1],
            frames=total,
            fps=fps,
            duration_s=float(meta["duration"]),
        ),
        dicom=dicom_facts(video.dicom),
    )
