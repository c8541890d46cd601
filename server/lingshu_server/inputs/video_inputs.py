"""A request's `video_url` parts -> planned videos (fetched, probed, token cost known) ->
decoded frames for the engine. The CPU work is video.py's, run in the worker pool.

Sources: `data:` URLs, the opt-in http(s)/file sources (the image allow-lists), and DICOMweb: an
instance URL is a multi-frame DICOM (a cine loop), a series URL is a video of its slices in
anatomical order, sampled like frames before any slice is fetched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lingshu_server.core.errors import InvalidRequestError
from lingshu_server.inputs.dicom import DicomOptions, dicom_size
from lingshu_server.inputs.dicomweb import DicomWebSource
from lingshu_server.inputs.image_sources import ImageFetcher
from lingshu_server.inputs.media import data_url_decoded_size, decode_data_url
from lingshu_server.inputs.video import (
    NOMINAL_FPS,
    TOO_LARGE,
    PreparedVideo,
    SamplingOptions,
    VideoLimits,
    VideoPlan,
    VideoSource,
    decode_slices,
    decode_video,
    frame_size,
    plan_video,
    prepared,
    probe_video,
    sample_frames,
)
from lingshu_server.protocol.common import ChatMessage, VideoPart

T = TypeVar("T")
VideoParts = list[tuple[str, VideoPart]]  # (request param, part), in prompt order


@dataclass(kw_only=True)
class PlannedVideo:
    param: str
    plan: VideoPlan
    encoded: list[bytes]  # the file, or a series' chosen slices in frame order
    dicom: DicomOptions
    source: dict[str, str] | None = field(default=None)  # DICOMweb audit record

    @property
    def num_tokens(self) -> int:
        return self.plan.num_tokens


def video_param(message: int, part: int) -> str:
    return f"messages[{message}].content[{part}].video_url"


def video_parts(messages: list[ChatMessage]) -> VideoParts:
    """Every video part in prompt order, with the request param that names it."""
    found = []
    for i, message in enumerate(messages):
        if isinstance(message.content, list):
            for j, part in enumerate(message.content):
                if isinstance(part, VideoPart):
                    found.append((video_param(i, j), part))
    return found


def sampling_options(part: VideoPart) -> SamplingOptions:
    spec = part.video_url
    return SamplingOptions(
        fps=spec.fps,
        nframes=spec.nframes,
        min_pixels=spec.min_pixels,
        max_pixels=spec.max_pixels,
        total_pixels=spec.total_pixels,
    )


def dicom_options(part: VideoPart) -> DicomOptions:
    window = part.video_url.dicom
    if window is None:
        return DicomOptions()
    return DicomOptions(window=window.window, center=window.center, width=window.width)


class VideoInputs:
    def __init__(
        self,
        *,
        pool: Executor,
        limits: VideoLimits,
        max_videos: int,
        fetcher: ImageFetcher,
        dicomweb: DicomWebSource,
        max_tokens_per_video: int,
    ):
        self._pool = pool
        self._max_tokens = max_tokens_per_video
        self._limits = limits
        self._max_videos = max_videos
        self._fetcher = fetcher
        self._dicomweb = dicomweb

    def check(self, parts: VideoParts) -> None:
        """Count and inline size, before anything is fetched or decoded."""
        if len(parts) > self._max_videos:
            message = (
                "this server does not accept video input"
                if self._max_videos == 0
                else f"this request has {len(parts)} videos; the server accepts at most "
                f"{self._max_videos} per request"
            )
            raise InvalidRequestError(message, param="messages", code="too_many_videos")
        for param, part in parts:
            url = part.video_url.url
            if url.startswith("data:") and data_url_decoded_size(url) > self._limits.max_bytes:
                raise self._too_large(param)

    async def plan(self, parts: VideoParts) -> list[PlannedVideo]:
        """Fetch and probe every video: sizes, frames and token costs, nothing decoded."""
        planned = await asyncio.gather(*(self._plan(param, part) for param, part in parts))
        for video in planned:
            if video.num_tokens > self._max_tokens:
                raise InvalidRequestError(
                    f"the video would be {video.num_tokens} tokens; the engine takes at most "
                    f"{self._max_tokens} for one video (its encoder cache). Send fewer frames "
                    "(video_url.fps or nframes) or smaller ones (max_pixels or total_pixels)",
                    param=video.param,
                    code=TOO_LARGE,
                )
        return list(planned)

    async def decode(self, planned: list[PlannedVideo]) -> list[PreparedVideo]:
        return list(await asyncio.gather(*(self._decode(video) for video in planned)))

    async def _in_pool(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _too_large(self, param: str) -> InvalidRequestError:
        return InvalidRequestError(
            f"the video is larger than the server accepts ({self._limits.max_bytes} bytes)",
            param=param,
            code=TOO_LARGE,
        )

    async def _plan(self, param: str, part: VideoPart) -> PlannedVideo:
        url = part.video_url.url
        options = sampling_options(part)
        dicom = dicom_options(part)
        slice_urls = await self._dicomweb.series_instance_urls(url, param)
        if slice_urls is not None:
            return await self._plan_series(param, url, slice_urls, options, dicom)
        data = await self._fetch(url, param)
        source = await self._in_pool(probe_video, data, self._limits, param)
        plan = await self._in_pool(plan_video, source, options, self._limits, param)
        return PlannedVideo(
            param=param,
            plan=plan,
            encoded=[data],
            dicom=dicom,
            source=self._dicomweb.audit_record(url),
        )

    async def _fetch(self, url: str, param: str) -> bytes:
        if url.startswith("data:"):
            encoded = await self._in_pool(decode_data_url, url, param, self._limits.max_bytes)
            return encoded.data
        from_pacs = await self._dicomweb.fetch(url, param)
        if from_pacs is not None:
            return from_pacs
        return await self._fetcher.fetch(url, param, self._limits.max_bytes)

    async def _plan_series(
        self,
        param: str,
        series_url: str,
        urls: list[str],
        options: SamplingOptions,
        dicom: DicomOptions,
    ) -> PlannedVideo:
        """Slices as frames at a nominal rate: sampled first, then only the chosen fetched."""
        sample = sample_frames(len(urls), NOMINAL_FPS, options, self._limits, param)
        slices = await asyncio.gather(
            *(self._dicomweb.fetch(urls[i], param) for i in sample.indices)
        )
        encoded = [data for data in slices if data is not None]
        if sum(len(data) for data in encoded) > self._limits.max_bytes:
            raise self._too_large(param)
        sizes = await asyncio.gather(
            *(
                self._in_pool(dicom_size, data, param, self._limits.max_frame_pixels)
                for data in encoded
            )
        )
        if len(set(sizes)) != 1:
            raise InvalidRequestError(
                "the series' slices differ in size, so they cannot be one video",
                param=param,
                code="invalid_video",
            )
        width, height = sizes[0]
        size = frame_size(width, height, len(sample.indices), options, param)
        source = VideoSource(
            format="DICOM series",
            width=width,
            height=height,
            total_frames=len(urls),
            fps=NOMINAL_FPS,
        )
        plan = VideoPlan(source, sample, size)
        audit = self._dicomweb.audit_record(series_url)
        return PlannedVideo(param=param, plan=plan, encoded=encoded, dicom=dicom, source=audit)

    async def _decode(self, video: PlannedVideo) -> PreparedVideo:
        if video.plan.source.format == "DICOM series":
            started = time.perf_counter()
            frames, dicom = await self._in_pool(
                decode_slices, video.encoded, video.plan, video.dicom, self._limits, video.param
            )
            result = prepared(frames, video.plan, video.encoded, self._limits, started, dicom)
        else:
            result = await self._in_pool(
                decode_video, video.encoded[0], video.plan, video.dicom, self._limits, video.param
            )
        result.source = video.source
        return result
