"""Wire models of `POST /v1/images/preview`: one chat content part in, what the model sees out.

The request is a content part exactly as chat accepts it (`image_url` or `video_url`, with
every option). The answer shows the pixels the engine's vision encoder gets, as PNG data URLs,
with their size, token cost and where they came from (an extension, not an OpenAI type).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from lingshu_server.protocol.common import ImagePart, ResponseModel, VideoPart, WindowSource

PreviewRequest = Annotated[ImagePart | VideoPart, Field(discriminator="type")]


class PixelRange(ResponseModel):
    min_pixels: int
    max_pixels: int


class Resizing(ResponseModel):
    """The model card's resize (qwen-vl-utils' within the message budget: the part's, inside
    the processor's), and the image processor's where it resizes again."""

    recipe_width: int = Field(description="After qwen-vl-utils' resize (what the server sends)")
    recipe_height: int
    resized_twice: bool = Field(
        description="The engine's processor resized it again, to width x height (only where "
        "smart_resize's rounding lands outside the processor's budget)"
    )
    request_budget: PixelRange = Field(
        description="The message budget the one resize used: from detail, min_pixels and "
        "max_pixels, within the processor's budget"
    )
    processor_budget: PixelRange = Field(description="The checkpoint's, or the server's tighter")


class SourceFacts(ResponseModel):
    format: str = Field(description='Sniffed from the bytes: "PNG", "JPEG", "DICOM", "MP4"...')
    bytes: int = Field(description="Encoded size")
    width: int = Field(description="As sent (upright: EXIF orientation applied)")
    height: int


class AppliedWindowFacts(ResponseModel):
    source: WindowSource = Field(
        description="request (center/width), request_preset, file_voi_lut, file_window "
        "(its first pair), default_preset (CT: --dicom-default-ct-window) or full_range"
    )
    center: float | None = None
    width: float | None = None
    function: str | None = Field(default=None, description="LINEAR, LINEAR_EXACT or SIGMOID")
    preset: str | None = Field(default=None, description="The CT window's name, for presets")


class DicomFacts(ResponseModel):
    """What the decoder did; never a header value that identifies a patient or a study."""

    modality: str | None
    photometric_interpretation: str | None = Field(
        description="As stored; MONOCHROME1 is inverted, YBR and palettes become RGB"
    )
    frame: int = Field(description="0-based frame shown (multi-frame files)")
    frames: int
    window: AppliedWindowFacts | None = Field(description="None for colour images")


class ImagePreview(ResponseModel):
    image: str = Field(description="data:image/png;base64,... the pixels the model sees")
    width: int
    height: int
    tokens: int = Field(description="Visual tokens (one per 28x28 pixels)")
    source: SourceFacts
    resizing: Resizing
    dicom: DicomFacts | None = None


class VideoFrame(ResponseModel):
    position: int = Field(description="Index among the sampled frames")
    source_frame: int = Field(description="Index of the frame in the source")
    time_s: float
    image: str = Field(description="data:image/png;base64,... the frame as the model sees it")


class VideoSourceFacts(SourceFacts):
    frames: int
    fps: float
    duration_s: float


class VideoPreview(ResponseModel):
    width: int = Field(description="Every sampled frame's size as the model sees it")
    height: int
    tokens: int = Field(description="Visual tokens: two frames make one temporal patch")
    sampled_frames: int
    sample_fps: float
    frame_indices: list[int] = Field(description="The source frames sampled, in order")
    shown: list[VideoFrame] = Field(description="Up to 8 sampled frames, evenly spaced")
    source: VideoSourceFacts
    dicom: DicomFacts | None = Field(default=None, description="Of the first sampled frame")


class PreviewResponse(ResponseModel):
    object: Literal["preview"] = "preview"
    type: Literal["image_url", "video_url"]
    tokens: int = Field(description="Visual tokens the part adds to a chat prompt")
    images: list[ImagePreview] = Field(
        default_factory=list,
        description="image_url: one image; a DICOMweb series URL: one per slice sent",
    )
    video: VideoPreview | None = None
