"""Real medical images through the server: formats, DICOM, budgets, sources. Each image is
seen by the token count it reaches the engine with (the fake engine expands images as vLLM
does; tests/test_chat_completions.py checks that expansion on the real engine)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest
import skimage
from pydicom.data import get_testdata_file

from tests.utils.errors import assert_openai_error
from tests.utils.images import (
    data_url,
    encode,
    gradient_image,
    image_part,
    png_bomb,
    tokens_for,
)

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
QUESTION = "Describe the findings."


def ask(client: httpx.Client, part: dict) -> httpx.Response:
    messages = [{"role": "user", "content": [part, {"type": "text", "text": QUESTION}]}]
    return client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 2})


@pytest.fixture
def baseline(server) -> int:
    """Prompt tokens of the question without any image."""
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        body = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 1}
        return http.post("/v1/chat/completions", json=body).json()["usage"]["prompt_tokens"]


def dicom_url(name: str, mime: str = "application/dicom") -> str:
    return data_url(Path(get_testdata_file(name)).read_bytes(), mime)


def assert_image_tokens(response: httpx.Response, baseline: int, tokens: int) -> None:
    assert response.status_code == 200, response.text
    # each image adds its visual tokens plus <|vision_start|> and <|vision_end|>
    assert response.json()["usage"]["prompt_tokens"] == baseline + tokens + 2


@pytest.mark.parametrize(
    ("name", "width", "height"),
    [
        ("CT_small.dcm", 128, 128),
        ("MR_small.dcm", 64, 64),
        ("emri_small.dcm", 64, 64),  # multi-frame MR
        ("examples_ybr_color.dcm", 320, 240),  # multi-frame US, JPEG baseline, YBR colour
        ("US1_UNCR.dcm", 640, 480),  # RGB ultrasound
        ("MR_small_RLE.dcm", 64, 64),  # RLE lossless
        ("JPGLosslessP14SV1_1s_1f_8b.dcm", 1024, 768),  # JPEG lossless
        ("RG1_UNCR.dcm", 1841, 1955),  # pydicom-data's CR chest, MONOCHROME1
    ],
)
def test_dicom_files_reach_the_engine(client, baseline, name, width, height):
    assert_image_tokens(
        ask(client, image_part(dicom_url(name))), baseline, tokens_for(width, height)
    )


def test_dicom_sniffed_under_a_generic_mime_type(client, baseline):
    part = image_part(dicom_url("CT_small.dcm", "application/octet-stream"))
    assert_image_tokens(ask(client, part), baseline, tokens_for(128, 128))


@pytest.mark.parametrize(
    "dicom",
    [{"window": "lung"}, {"window": "bone"}, {"center": -600, "width": 1500}, {"frame": 3}],
)
def test_dicom_options_per_request(client, baseline, dicom):
    name = "emri_small.dcm" if "frame" in dicom else "CT_small.dcm"
    size = 64 if "frame" in dicom else 128
    part = image_part(dicom_url(name), dicom=dicom)
    assert_image_tokens(ask(client, part), baseline, tokens_for(size, size))


@pytest.mark.parametrize(
    ("file", "mime", "width", "height"),
    [
        ("retina.jpg", "image/jpeg", 1411, 1411),  # fundus photograph
        ("ihc.png", "image/png", 512, 512),  # immunohistochemistry (histology)
    ],
)
def test_skimage_photographs_reach_the_engine(client, baseline, file, mime, width, height):
    url = data_url((SKIMAGE_DATA / file).read_bytes(), mime)
    assert_image_tokens(ask(client, image_part(url)), baseline, tokens_for(width, height))


def test_detail_low_and_explicit_max_pixels_shrink_the_image(client, baseline):
    url = data_url((SKIMAGE_DATA / "retina.jpg").read_bytes(), "image/jpeg")
    low = ask(client, image_part(url, detail="low"))
    assert_image_tokens(low, baseline, tokens_for(1411, 1411, 256 * 28 * 28))
    explicit = ask(client, image_part(url, max_pixels=100 * 28 * 28))
    assert_image_tokens(explicit, baseline, tokens_for(1411, 1411, 100 * 28 * 28))


def test_tiny_image_is_upscaled(client, baseline):
    url = data_url(encode(gradient_image(5, 5), "PNG"))
    assert_image_tokens(ask(client, image_part(url)), baseline, 4)


def test_image_that_would_overflow_the_context_is_400(client):
    # 3000x3000 at the default budget is ~11,500 image tokens; the demo context is 8192
    url = data_url(encode(gradient_image(3000, 3000, mode="L"), "JPEG"), "image/jpeg")
    error = assert_openai_error(ask(client, image_part(url)), 400, code="context_length_exceeded")
    assert "image" in error["message"]
    # the same image at a smaller budget fits
    assert ask(client, image_part(url, detail="low")).status_code == 200


def test_allowed_http_image_host(client, baseline, image_sources):
    part = image_part(f"{image_sources.http_origin}/xray.png")
    assert_image_tokens(ask(client, part), baseline, tokens_for(224, 224))


def test_file_url_inside_the_local_dir(client, baseline, image_sources):
    part = image_part((image_sources.local_dir / "xray.png").as_uri())
    assert_image_tokens(ask(client, part), baseline, tokens_for(224, 224))


def bad_image_parts(image_sources) -> dict[str, tuple[dict, str]]:
    png = encode(gradient_image(256, 256), "PNG")
    escape = f"file://{image_sources.local_dir}/../outside/xray.png"
    return {
        "truncated png": (image_part(data_url(png[: len(png) // 2])), "invalid_image"),
        "garbage base64": (image_part("data:image/png;base64,%%%garbage%%%"), "invalid_base64"),
        "bomb": (image_part(data_url(png_bomb(60000, 60000))), "image_too_large"),
        "sr dicom": (image_part(dicom_url("test-SR.dcm")), "dicom_no_image"),
        "rt plan": (image_part(dicom_url("rtplan.dcm")), "dicom_no_image"),
        "ecg waveform": (image_part(dicom_url("waveform_ecg.dcm")), "dicom_no_image"),
        "unsupported syntax": (image_part(unsupported_syntax_url()), "dicom_unsupported_syntax"),
        "disallowed url": (image_part("http://127.0.0.9:9/x.png"), "image_url_not_allowed"),
        "escaping path": (image_part(escape), "image_url_not_allowed"),
        "oversized": (image_part(data_url(b"\0" * (33 * 1024 * 1024))), "image_too_large"),
        "aspect ratio": (
            image_part(data_url(encode(gradient_image(4020, 20, mode="L"), "PNG"))),
            "invalid_image",
        ),
    }


def unsupported_syntax_url() -> str:
    """A real compressed file relabelled as HEVC video, which no installed plugin decodes."""
    import io

    import pydicom

    ds = pydicom.dcmread(get_testdata_file("JPEG2000.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.107"  # HEVC Main Profile
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return data_url(buffer.getvalue(), "application/dicom")


def test_bad_inputs_get_4xx_while_a_stream_completes(server, client, image_sources):
    streamed: list[str] = []

    def stream() -> None:
        body = {
            "messages": [{"role": "user", "content": "Write a long report."}],
            "max_tokens": 64,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with httpx.Client(base_url=server.base_url, timeout=120) as http:
            with http.stream("POST", "/v1/chat/completions", json=body) as response:
                streamed.extend(line for line in response.iter_lines() if line)

    thread = threading.Thread(target=stream)
    thread.start()
    for label, (part, code) in bad_image_parts(image_sources).items():
        response = ask(client, part)
        assert response.status_code == 400, (label, response.text)
        assert response.json()["error"]["code"] == code, (label, response.text)
    thread.join(120)
    assert streamed[-1] == "data: [DONE]"
    usage = json.loads(streamed[-2].removeprefix("data: "))["usage"]
    assert usage["completion_tokens"] >= 1
    assert all('"error"' not in line for line in streamed)
