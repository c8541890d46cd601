"""Same pixels in: the image the server hands the engine is the one qwen-vl-utils' fetch_image
makes for the model card's recipe (the server's budget on the message: tests/utils/reference.py),
pixel for pixel, and the model card's processor keeps it as it is and counts the same visual
tokens; a video's frames are fetch_video's. In process, no engine needed."""

from __future__ import annotations

import numpy as np
import pytest
from qwen_vl_utils.vision_process import fetch_image, fetch_video

from lingshu_server.core.image_budget import checkpoint_budget
from lingshu_server.core.settings import Settings
from lingshu_server.inputs.dicom import DicomOptions
from lingshu_server.inputs.media import ImageLimits, decode_data_url, prepare_image
from lingshu_server.inputs.video import VideoLimits, decode_video, plan_video, probe_video
from lingshu_server.inputs.video_inputs import sampling_options
from lingshu_server.protocol.common import VideoPart
from tests.parity.cases import CASES
from tests.utils.reference import to_openai_video, use_pyav_reader


def single_images() -> list[tuple[str, dict, dict]]:
    """(case, element sent, element the reference gets) for every image of every case."""
    found = []
    for name, build in sorted(CASES.items()):
        sent, reference = build()
        for sent_message, reference_message in zip(sent, reference, strict=True):
            if isinstance(sent_message["content"], str):
                continue
            for ours, theirs in zip(
                sent_message["content"], reference_message["content"], strict=True
            ):
                if ours["type"] == "image":
                    found.append((name, ours, theirs))
    return found


IMAGES = single_images()


@pytest.mark.parametrize(("case", "sent", "element"), IMAGES, ids=[i[0] for i in IMAGES])
@pytest.mark.parametrize("checkpoint", ["demo", "small"])
def test_server_pixels_and_tokens_equal_the_model_cards(
    case, sent, element, checkpoint, demo_reference, small_reference, small_checkpoint
):
    from lingshu_server.demo_model import ensure_demo_model

    reference = demo_reference if checkpoint == "demo" else small_reference
    model_dir = ensure_demo_model() if checkpoint == "demo" else small_checkpoint
    limits = ImageLimits.from_settings(Settings(), checkpoint_budget(str(model_dir)).budget)
    encoded = decode_data_url(sent["image"], "p")
    budget = limits.budget(None, sent.get("min_pixels"), sent.get("max_pixels"))
    ours = prepare_image(encoded, limits, budget, DicomOptions(), "p")

    theirs = fetch_image(reference.image_element(element))
    assert ours.image.size == theirs.size
    assert np.array_equal(np.asarray(ours.image), np.asarray(theirs))

    processed = reference.processor.image_processor(images=[theirs], return_tensors="pt")
    t, h, w = processed["image_grid_thw"][0].tolist()
    assert ours.num_tokens == t * h * w // 4
    assert ours.size == theirs.size == (w * 14, h * 14)  # the processor resized nothing
    assert not ours.resized_twice


def single_videos() -> list[tuple[str, dict]]:
    """(case, the model card's video element) for every video of every case."""
    found = []
    for name, build in sorted(CASES.items()):
        for message in build()[1]:
            if isinstance(message["content"], list):
                found += [(name, part) for part in message["content"] if part["type"] == "video"]
    return found


VIDEOS = single_videos()


@pytest.mark.parametrize(("case", "element"), VIDEOS, ids=[v[0] for v in VIDEOS])
def test_server_video_frames_equal_fetch_videos(case, element, demo_reference):
    """Frames, their timing and their token count, as qwen-vl-utils' fetch_video and the
    model card's processor make them (the reference's reader: tests/utils/reference.py)."""
    settings = Settings()
    limits = VideoLimits.from_settings(settings)
    part = VideoPart.model_validate({"type": "video_url", "video_url": to_openai_video(element)})
    data = decode_data_url(part.video_url.url, "p").data
    source = probe_video(data, limits, "p")
    plan = plan_video(source, sampling_options(part), limits, "p")
    ours = decode_video(data, plan, DicomOptions(), limits, "p")

    use_pyav_reader()
    (theirs, metadata), sample_fps = fetch_video(
        element, return_video_sample_fps=True, return_video_metadata=True
    )
    assert ours.frames.shape == tuple(theirs.permute(0, 2, 3, 1).shape)
    assert np.array_equal(ours.frames, theirs.permute(0, 2, 3, 1).numpy().astype(np.uint8))
    assert ours.metadata["frames_indices"] == list(metadata["frames_indices"].tolist())
    assert ours.metadata["fps"] == metadata["fps"]
    assert plan.sample.sample_fps == pytest.approx(sample_fps)

    processed = demo_reference.processor.video_processor(
        videos=[theirs], do_resize=False, return_tensors="pt"
    )
    t, h, w = processed["video_grid_thw"][0].tolist()
    assert ours.num_tokens == t * h * w // 4
