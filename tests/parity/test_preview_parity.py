"""The preview shows the vision encoder's input. On the size-form checkpoint (a 512-token
`longest_edge`), the budget goes on the message, so qwen-vl-utils resizes a large image once, to
a size the checkpoint's processor keeps; where smart_resize's rounding lands beyond the
processor's budget (an image's own min_pixels near it), the processor resizes again, and the
preview's PNG, given to that processor without a resize, yields exactly the `pixel_values` the
model card's processor makes of the recipe's image.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from qwen_vl_utils.vision_process import fetch_image

from lingshu_server.core.image_budget import checkpoint_budget
from lingshu_server.inputs.processor_resize import ProcessorResize
from tests.parity.conftest import SMALL_MAX_PIXELS
from tests.utils.dicom_reference import reference_pixels
from tests.utils.images import data_url, encode, gradient_image, image_part
from tests.utils.preview import PREVIEW, png_pixels


def pixel_values(reference, image: Image.Image, resize: bool) -> tuple[torch.Tensor, list[int]]:
    processed = reference.processor.image_processor(
        images=[image], do_resize=resize, return_tensors="pt"
    )
    return processed["pixel_values"], processed["image_grid_thw"][0].tolist()


def assert_is_what_the_encoder_gets(reference, seen: Image.Image, recipe_image: Image.Image):
    """`seen`, normalised without a resize, equals the processor's input from the recipe."""
    expected, (t, h, w) = pixel_values(reference, recipe_image, resize=True)
    ours, grid = pixel_values(reference, seen, resize=False)
    assert seen.size == (w * 14, h * 14) and grid == [t, h, w]
    assert torch.equal(ours, expected)


IMAGES = {
    "landscape": lambda: gradient_image(1500, 1000, seed=5),
    "tall": lambda: gradient_image(300, 2600, seed=6),
    "square-gray": lambda: gradient_image(1200, 1200, mode="L", seed=8).convert("RGB"),
}


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_processor_resize_is_the_processors_own(small_checkpoint, small_reference, name):
    """In process: the step the preview adds is the processor's resize, to the last bit."""
    budget = checkpoint_budget(str(small_checkpoint)).budget
    assert budget.max_pixels == SMALL_MAX_PIXELS
    recipe_image = fetch_image({"image": IMAGES[name]()})
    assert recipe_image.width * recipe_image.height > SMALL_MAX_PIXELS  # so there is a 2nd step
    seen = ProcessorResize(str(small_checkpoint), budget)(recipe_image)
    assert seen.mode == "RGB" and seen.width * seen.height <= SMALL_MAX_PIXELS
    assert_is_what_the_encoder_gets(small_reference, seen, recipe_image)


def _preview(server, part: dict) -> dict:
    response = httpx.post(f"{server.base_url}{PREVIEW}", json=part, timeout=300)
    assert response.status_code == 200, response.text
    (image,) = response.json()["images"]
    return image


def test_preview_of_a_large_png_is_one_resize_to_the_budget(small_server, small_reference):
    encoded = encode(gradient_image(1500, 1000, seed=5), "PNG")
    image = _preview(small_server, image_part(data_url(encoded)))
    recipe_image = fetch_image(small_reference.image_element({"image": data_url(encoded)}))
    assert image["resizing"]["resized_twice"] is False
    assert (image["width"], image["height"]) == recipe_image.size == (756, 504)
    assert image["resizing"]["request_budget"]["max_pixels"] == SMALL_MAX_PIXELS
    seen = Image.fromarray(png_pixels(image["image"]), "RGB")
    assert np.array_equal(np.asarray(seen), np.asarray(recipe_image))
    assert_is_what_the_encoder_gets(small_reference, seen, recipe_image)
    _, (t, h, w) = pixel_values(small_reference, recipe_image, resize=True)
    assert image["tokens"] == t * h * w // 4 <= SMALL_MAX_PIXELS // 784


def test_preview_where_the_processor_resizes_again(small_server, small_reference):
    """An image's own min_pixels at the budget: smart_resize rounds up past it (364x1176),
    and the processor brings that within its limits."""
    encoded = encode(gradient_image(140, 479, seed=4), "PNG")
    image = _preview(small_server, image_part(data_url(encoded), min_pixels=10**6))
    element = small_reference.image_element({"image": data_url(encoded), "min_pixels": 10**6})
    recipe_image = fetch_image(element)
    assert image["resizing"]["resized_twice"] is True
    resizing = image["resizing"]
    assert (resizing["recipe_width"], resizing["recipe_height"]) == recipe_image.size
    assert recipe_image.width * recipe_image.height > SMALL_MAX_PIXELS
    assert image["resizing"]["processor_budget"]["max_pixels"] == SMALL_MAX_PIXELS
    seen = Image.fromarray(png_pixels(image["image"]), "RGB")
    assert_is_what_the_encoder_gets(small_reference, seen, recipe_image)


def test_preview_of_a_monochrome1_chest_is_one_resize(small_server, small_reference):
    path = get_testdata_file("RG1_UNCR.dcm")
    part = image_part(data_url(Path(path).read_bytes(), "application/dicom"))
    image = _preview(small_server, part)
    windowed = Image.fromarray(reference_pixels(path).astype(np.uint8), "L")
    recipe_image = fetch_image(small_reference.image_element({"image": windowed}))
    assert image["resizing"]["resized_twice"] is False
    assert image["dicom"]["photometric_interpretation"] == "MONOCHROME1"
    seen = Image.fromarray(png_pixels(image["image"]), "RGB")
    assert np.array_equal(np.asarray(seen), np.asarray(recipe_image))


def test_within_the_budget_there_is_no_second_resize(small_server):
    encoded = encode(gradient_image(400, 300, seed=9), "PNG")
    image = _preview(small_server, image_part(data_url(encoded)))
    assert image["resizing"]["resized_twice"] is False
    expected = np.asarray(fetch_image({"image": data_url(encoded)}))
    assert np.array_equal(png_pixels(image["image"]), expected)
