"""Video inputs: a clip (MP4, WebM, MOV, GIF) or a multi-frame DICOM -> the frames the model
card's recipe gives the model, pixel for pixel.

qwen-vl-utils' `fetch_video` is the rule: `smart_nframes` chooses how many frames (2 per second
by default, an even count), they are taken at `linspace(0, total - 1, n).round()`, and all are
resized to one size by `smart_resize` within the per-video budget (128..768 tokens a frame, and
`total_pixels` shared by all frames), bicubic with antialiasing as torchvision does it. Two frames
make one temporal patch, so a video costs n/2 x (h/28) x (w/28) tokens.

Two steps, like images: `probe_*` reads the header and counts packets (no pixel decoded), so the
token cost is known and checked before any decoding; `decode_*` then decodes sequentially, keeps
only the chosen frames (resized at once, so memory stays bounded), and stops at a deadline.
Both are CPU work for the worker pool.
"""

from __future__ import annotations

import hashlib
import io
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import torch
from PIL import Image
from qwen_vl_utils import vision_process as qwen
from torchvision.transforms import InterpolationMode
from torchvision.transforms.functional import resize

from lingshu_server.core.errors import InvalidRequestError
from lingshu_server.core.image_budget import IMAGE_FACTOR
from lingshu_server.core.settings import Settings
from lingshu_server.inputs.dicom import (
    DicomOptions,
    DicomRendering,
    dicom_frames,
    dicom_motion,
    is_dicom,
    render_dicom,
)
from lingshu_server.inputs.media import check_aspect_ratio, to_rgb

# A multi-frame DICOM without timing (a volume) and a DICOMweb series are shown at the rate
# qwen-vl-utils samples at, so by default every frame or slice reaches the model.
NOMINAL_FPS = qwen.FPS
# Containers whose demuxer we run (the sniffed format decides, never the file's own claim), and
# the codecs we decode. Nothing else reaches FFmpeg: no playlists, no network protocols.
_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "gif", "mjpeg"})
MAX_SOURCE_FPS = 1000.0  # more is not a video but a bomb
INVALID = "invalid_video"
TOO_LARGE = "video_too_large"


@dataclass(frozen=True, kw_only=True)
class VideoLimits:
    max_bytes: int  # encoded, per video
    max_frames: int  # frames sampled for the model, per video
    max_seconds: float  # source duration
    max_frame_pixels: int  # one decoded frame (width x height)
    decode_timeout: float  # seconds of probing and decoding, per video
    default_ct_window: str
    hash_videos: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> VideoLimits:
        return cls(
            max_bytes=settings.max_video_bytes,
            max_frames=settings.max_video_frames,
            max_seconds=settings.max_video_seconds,
            max_frame_pixels=settings.max_image_pixels,
            decode_timeout=settings.video_decode_timeout,
            default_ct_window=settings.dicom_default_ct_window,
            hash_videos=settings.audit_log_file is not None,
        )


@dataclass(frozen=True, kw_only=True)
class SamplingOptions:
    """A `video_url` part's options, as qwen-vl-utils names them (None: its default)."""

    fps: float | None = None
    nframes: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    total_pixels: int | None = None


@dataclass(frozen=True, kw_only=True)
class VideoSource:
    """What the header says: frame size, frame count and rate."""

    format: str  # "MP4", "WEBM", "GIF", "DICOM", "DICOM series"
    width: int
    height: int
    total_frames: int
    fps: float


@dataclass(frozen=True)
class FrameSample:
    total_frames: int
    fps: float
    indices: list[int]  # which frames, in order

    @property
    def sample_fps(self) -> float:
        return len(self.indices) / self.total_frames * self.fps

    def metadata(self, width: int, height: int) -> dict[str, Any]:
        """transformers' VideoMetadata: the processor derives the temporal spacing of the
        model's positions from it (second_per_grid_ts = 2 / sample_fps)."""
        return {
            "fps": self.fps,
            "total_num_frames": self.total_frames,
            "frames_indices": list(self.indices),
            "duration": self.total_frames / self.fps,
            "width": width,
            "height": height,
            "video_backend": "pyav",
            "do_sample_frames": False,  # sampled here already
        }


@dataclass(frozen=True)
class VideoPlan:
    source: VideoSource
    sample: FrameSample
    size: tuple[int, int]  # (width, height) of every frame the model sees

    @property
    def num_tokens(self) -> int:
        frames = len(self.sample.indices)
        temporal = (frames + frames % 2) // 2
        width, height = self.size
        return temporal * (width // IMAGE_FACTOR) * (height // IMAGE_FACTOR)


@dataclass
class PreparedVideo:
    frames: np.ndarray  # T x H x W x 3, uint8
    metadata: dict[str, Any]
    source_format: str
    encoded_bytes: int
    source_size: tuple[int, int]
    num_tokens: int
    seconds: float
    sha256: str | None = None
    source: dict[str, str] | None = field(default=None)  # DICOMweb audit record
    dicom: DicomRendering | None = None  # DICOM: what the decoder did to the first frame


def error(message: str, param: str, code: str = INVALID) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


# ---------------------------------------------------------------- sampling and size


def sample_frames(
    total: int, fps: float, options: SamplingOptions, limits: VideoLimits, param: str
) -> FrameSample:
    """qwen-vl-utils' smart_nframes and index rule, within the server's frame cap."""
    if total < qwen.FRAME_FACTOR:
        raise error(
            f"a video needs at least {qwen.FRAME_FACTOR} frames; this one has {total}", param
        )
    if not (math.isfinite(fps) and 0 < fps <= MAX_SOURCE_FPS):
        raise error("the video's frame rate is missing or absurd", param)
    if total / fps > limits.max_seconds:
        raise error(
            f"the video is {total / fps:.1f} s long; the server accepts at most "
            f"{limits.max_seconds:g} s",
            param,
            TOO_LARGE,
        )
    cap = limits.max_frames - limits.max_frames % qwen.FRAME_FACTOR
    element: dict[str, Any] = {"max_frames": min(qwen.FPS_MAX_FRAMES, total, cap)}
    if options.nframes is not None:
        element = {"nframes": min(options.nframes, cap)}
    elif options.fps is not None:
        element["fps"] = options.fps
    try:
        count = qwen.smart_nframes(element, total_frames=total, video_fps=fps)
    except ValueError:
        raise error(
            f"nframes {options.nframes} is more than the video's {total} frames",
            f"{param}.nframes",
            "invalid_video_options",
        ) from None
    # torch's float32 linspace, as fetch_video computes it: numpy's rounds some indices apart
    indices = torch.linspace(0, total - 1, count).round().long().tolist()
    return FrameSample(total, fps, indices)


def frame_size(
    width: int, height: int, frames: int, options: SamplingOptions, param: str
) -> tuple[int, int]:
    """(width, height) fetch_video resizes every frame to, for `frames` sampled frames."""
    check_aspect_ratio(width, height, param)
    unit = IMAGE_FACTOR * IMAGE_FACTOR
    min_pixels = options.min_pixels or qwen.VIDEO_MIN_TOKEN_NUM * unit
    total_pixels = options.total_pixels or qwen.MODEL_SEQ_LEN * unit * 0.9
    max_pixels = max(
        min(qwen.VIDEO_MAX_TOKEN_NUM * unit, total_pixels / frames * qwen.FRAME_FACTOR),
        int(min_pixels * 1.05),
    )
    max_pixels = min(options.max_pixels or max_pixels, max_pixels)
    if max_pixels < min_pixels:
        raise error(
            f"max_pixels {options.max_pixels} is below min_pixels {min_pixels}",
            f"{param}.max_pixels",
            "invalid_video_options",
        )
    new_height, new_width = qwen.smart_resize(
        height, width, IMAGE_FACTOR, min_pixels=min_pixels, max_pixels=max_pixels
    )
    return new_width, new_height


def plan_video(
    source: VideoSource, options: SamplingOptions, limits: VideoLimits, param: str
) -> VideoPlan:
    sample = sample_frames(source.total_frames, source.fps, options, limits, param)
    size = frame_size(source.width, source.height, len(sample.indices), options, param)
    return VideoPlan(source, sample, size)


def resize_frame(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """torchvision's bicubic antialiased resize of a uint8 frame, as fetch_video applies it."""
    width, height = size
    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
    resized = resize(tensor, [height, width], InterpolationMode.BICUBIC, antialias=True)
    return resized.permute(1, 2, 0).numpy()


class Deadline:
    def __init__(self, seconds: float, param: str):
        self._at = time.monotonic() + seconds
        self._seconds = seconds
        self._param = param

    def check(self) -> None:
        if time.monotonic() > self._at:
            raise error(
                f"decoding the video took longer than the {self._seconds:g} s allowed",
                self._param,
                TOO_LARGE,
            )


# ---------------------------------------------------------------- containers (PyAV)


def sniff_container(data: bytes) -> str | None:
    """The container format from the first bytes: PyAV's demuxer name, or None."""
    if data[4:8] == b"ftyp" or data[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return "mov"  # MP4 and QuickTime share the ISO base media demuxer
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # WebM and Matroska
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


_FORMAT_NAMES = {"mov": "MP4", "matroska": "WEBM", "gif": "GIF"}


def _open(data: bytes, demuxer: str, param: str) -> Any:
    try:
        container = av.open(io.BytesIO(data), mode="r", format=demuxer)
    except (av.FFmpegError, ValueError, OSError):
        raise error("the video is truncated or corrupt", param) from None
    if not container.streams.video:
        container.close()
        raise error("the file holds no video stream", param)
    stream = container.streams.video[0]
    if stream.codec_context.name not in _CODECS:
        container.close()
        raise error(
            f"video codec {stream.codec_context.name!r} is not supported (H.264, HEVC, VP8, "
            "VP9, AV1, MPEG-4, GIF or MJPEG)",
            param,
        )
    return container


def probe_container(data: bytes, limits: VideoLimits, param: str) -> VideoSource:
    """Size and rate from the header; the frame count from the packets (demuxed, not decoded)."""
    demuxer = sniff_container(data)
    if demuxer is None:
        raise error(
            "the data is not a video in a supported format (MP4, MOV, WebM, GIF or DICOM)", param
        )
    deadline = Deadline(limits.decode_timeout, param)
    container = _open(data, demuxer, param)
    try:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width <= 0 or height <= 0:
            raise error("the video has no frame size", param)
        if width * height > limits.max_frame_pixels:
            raise error(
                f"video frames are {width}x{height} pixels, more than the server decodes",
                param,
                TOO_LARGE,
            )
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        most = int(limits.max_seconds * MAX_SOURCE_FPS)
        total = 0
        for packet in container.demux(stream):
            if packet.size:
                total += 1
                if total > most:
                    raise error(
                        "the video has more frames than the server decodes", param, TOO_LARGE
                    )
                if total % 256 == 0:
                    deadline.check()
    except (av.FFmpegError, ValueError, OSError):
        raise error("the video is truncated or corrupt", param) from None
    finally:
        container.close()
    name = "MOV" if data[8:12] == b"qt  " else _FORMAT_NAMES[demuxer]
    return VideoSource(format=name, width=width, height=height, total_frames=total, fps=fps)


def decode_container(data: bytes, plan: VideoPlan, limits: VideoLimits, param: str) -> np.ndarray:
    """The planned frames, decoded in order and resized; other frames are decoded and dropped."""
    deadline = Deadline(limits.decode_timeout, param)
    wanted = _positions(plan.sample.indices)
    frames: list[np.ndarray | None] = [None] * len(plan.sample.indices)
    last = max(wanted)
    container = _open(data, sniff_container(data) or "", param)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            deadline.check()
            if index in wanted:
                rgb = frame.to_ndarray(format="rgb24")
                resized = resize_frame(rgb, plan.size)
                for position in wanted[index]:
                    frames[position] = resized
            if index >= last:
                break
    except (av.FFmpegError, ValueError, OSError):
        raise error("the video is truncated or corrupt", param) from None
    finally:
        container.close()
    return _stack(frames, param)


def _positions(indices: Sequence[int]) -> dict[int, list[int]]:
    wanted: dict[int, list[int]] = {}
    for position, index in enumerate(indices):
        wanted.setdefault(index, []).append(position)
    return wanted


def _stack(frames: list[np.ndarray | None], param: str) -> np.ndarray:
    decoded = [frame for frame in frames if frame is not None]
    if len(decoded) < len(frames):
        raise error("the video is truncated or corrupt: frames are missing", param)
    return np.stack(decoded)


# ---------------------------------------------------------------- DICOM


def probe_dicom(data: bytes, limits: VideoLimits, param: str) -> VideoSource:
    motion = dicom_motion(data, param, limits.max_frame_pixels)
    fps = motion.fps if motion.fps is not None else NOMINAL_FPS
    return VideoSource(
        format="DICOM",
        width=motion.width,
        height=motion.height,
        total_frames=motion.frames,
        fps=fps,
    )


def _rgb_frames(
    rendered: Iterable[tuple[Image.Image, DicomRendering]],
    size: tuple[int, int],
    deadline: Deadline,
) -> tuple[np.ndarray, DicomRendering | None]:
    """The frames, resized, and what the decoder did to the first of them."""
    frames, first = [], None
    for image, rendering in rendered:
        deadline.check()
        frames.append(resize_frame(np.array(to_rgb(image)), size))  # writable, for torch
        first = first or rendering
    return np.stack(frames), first


def decode_dicom(
    data: bytes, plan: VideoPlan, options: DicomOptions, limits: VideoLimits, param: str
) -> tuple[np.ndarray, DicomRendering | None]:
    deadline = Deadline(limits.decode_timeout, param)
    rendered = dicom_frames(
        data, plan.sample.indices, options, limits.default_ct_window, param, limits.max_frame_pixels
    )
    return _rgb_frames(rendered, plan.size, deadline)


def decode_slices(
    slices: Sequence[bytes], plan: VideoPlan, options: DicomOptions, limits: VideoLimits, param: str
) -> tuple[np.ndarray, DicomRendering | None]:
    """A series' chosen slices (one image each, already in plan order) as frames."""
    deadline = Deadline(limits.decode_timeout, param)
    window = limits.default_ct_window
    rendered = (
        render_dicom(data, options, window, param, limits.max_frame_pixels) for data in slices
    )
    return _rgb_frames(rendered, plan.size, deadline)


# ---------------------------------------------------------------- one video, both steps


def probe_video(data: bytes, limits: VideoLimits, param: str) -> VideoSource:
    if is_dicom(data):
        return probe_dicom(data, limits, param)
    return probe_container(data, limits, param)


def decode_video(
    data: bytes, plan: VideoPlan, options: DicomOptions, limits: VideoLimits, param: str
) -> PreparedVideo:
    started = time.perf_counter()
    dicom = None
    if plan.source.format == "DICOM":
        frames, dicom = decode_dicom(data, plan, options, limits, param)
    else:
        frames = decode_container(data, plan, limits, param)
    return prepared(frames, plan, [data], limits, started, dicom)


def prepared(
    frames: np.ndarray,
    plan: VideoPlan,
    encoded: Sequence[bytes],
    limits: VideoLimits,
    started: float,
    dicom: DicomRendering | None = None,
) -> PreparedVideo:
    digest = None
    if limits.hash_videos:
        hasher = hashlib.sha256()
        for data in encoded:
            hasher.update(data)
        digest = hasher.hexdigest()
    width, height = plan.size
    return PreparedVideo(
        frames=frames,
        metadata=plan.sample.metadata(width, height),
        source_format=plan.source.format,
        encoded_bytes=sum(len(data) for data in encoded),
        source_size=(plan.source.width, plan.source.height),
        num_tokens=plan.num_tokens,
        seconds=time.perf_counter() - started,
        sha256=digest,
        dicom=dicom,
    )
