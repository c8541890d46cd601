"""Same pixels in: the image the server hands the engine is the one qwen-vl-utils' fetch_image
makes for the model card's recipe, pixel for pixel, and the engine's processor then counts the
same visual tokens as the model card's processor. In process, no engine needed."""

from __future__ import annotations

import numpy as np
import pytest
from qwen_vl_utils.vision_process import fetch_image

from lingshu_server.dicom import DicomOptions
from lingshu_server.image_budget import checkpoint_budget
from lingshu_server.media import ImageLimits, decode_data_url, prepare_image
from lingshu_server.settings import Settings
from tests.parity.cases import CASES


def single_images() -> list[tuple[str, str, str]]:
    """(case, url sent, url the reference gets) for every image of every case."""
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
                    found.append((name, ours["image"], theirs["image"]))
    return found


IMAGES = single_images()


@pytest.mark.parametrize(("case", "url", "reference_url"), IMAGES, ids=[i[0] for i in IMAGES])
@pytest.mark.parametrize("checkpoint", ["demo", "small"])
def test_server_pixels_and_tokens_equal_the_model_cards(
    case, url, reference_url, checkpoint, demo_reference, small_reference, small_checkpoint
):
    from lingshu_server.demo_model import ensure_demo_model

    reference = demo_reference if checkpoint == "demo" else small_reference
    model_dir = ensure_demo_model() if checkpoint == "demo" else small_checkpoint
    limits = ImageLimits.from_settings(Settings(), checkpoint_budget(str(model_dir)).budget)
    encoded = decode_data_url(url, "p")
    ours = prepare_image(encoded, limits, limits.budget(None, None, None), DicomOptions(), "p")

    theirs = fetch_image({"image": reference_url})
    assert ours.image.size == theirs.size
    assert np.array_equal(np.asarray(ours.image), np.asarray(theirs))

    grid = reference.processor.image_processor(images=[theirs], return_tensors="pt")
    t, h, w = grid["image_grid_thw"][0].tolist()
    assert ours.num_tokens == t * h * w // 4
    assert ours.size == (w * 14, h * 14)
