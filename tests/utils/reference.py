"""The model card's own recipe, as the reference the server must match.

transformers' `Qwen2_5_VLForConditionalGeneration` + `AutoProcessor` +
`qwen_vl_utils.process_vision_info`, greedy decoding in float32, exactly as the Qwen2.5-VL and
Lingshu model cards write it. Messages use the model card's shape
(`{"type": "image", "image": <data URL>}`, `{"type": "video", "video": <data URL>, "fps": ..}`),
and the same data URL goes to the server.

Images carry the server's pixel budget on the message, the model card's second way of setting
one (`min_pixels`/`max_pixels` beside `image`): the server's budget is the checkpoint's
processor limits (or the operator's tighter `--min-pixels`/`--max-pixels`), an image's own
`min_pixels`/`max_pixels` count within it. qwen-vl-utils' fetch_image then resizes each image
once, to a size the processor keeps.

Videos, two departures forced by the installed versions, both kept as small as possible:
- qwen-vl-utils' readers cannot run here (torchvision 0.28 has no `read_video`; neither decord
  nor torchcodec is installed), so a reader registered under the name "pyav" does what
  torchvision's `read_video` did, which was built on PyAV: decode every frame to RGB, the rate
  is the stream's average rate. DICOM cine loops are read with pydicom (RGB ultrasound: every
  frame as pydicom decodes it; the rate from Frame Time). Sampling (`smart_nframes`, the frame
  indices) and resizing are qwen-vl-utils' own `fetch_video`.
- The model card passes `**video_kwargs` (`fps=[...]`) to the processor; transformers 5.19
  rejects a list there, and without it takes 24 fps for every video. qwen-vl-utils' metadata
  form (`return_video_metadata=True`, then `video_metadata=`) gives the processor the sampled
  rate, so second_per_grid_ts is 2 / sample_fps as in the model card's transformers. The
  processor is told not to resize frames again (`do_resize: False` for videos): qwen-vl-utils'
  frame budget is the one the model was trained with.
Known difference left as it is: after a video whose temporal positions reach past its width or
height (long clips), transformers 5.19 restarts the text at max(h, w) while vLLM, like the
original Qwen2.5-VL code, restarts it after the largest video position. Prompt token ids are
unaffected; on the demo checkpoints the greedy tokens of the long clip still agree.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pydicom
import torch
from qwen_vl_utils import process_vision_info
from qwen_vl_utils import vision_process as qwen
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration


@dataclass
class ReferenceRun:
    input_ids: list[int]  # the prompt as the model sees it (image pads expanded)
    generated: list[int]  # greedy tokens
    pixel_values: torch.Tensor | None


class ModelCardReference:
    def __init__(self, model_dir: Path):
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            str(model_dir), dtype=torch.float32
        ).eval()
        self.processor = AutoProcessor.from_pretrained(str(model_dir))
        size = self.processor.image_processor.size  # the checkpoint's limits, either form
        self.min_pixels, self.max_pixels = size["shortest_edge"], size["longest_edge"]

    def image_element(self, element: dict) -> dict:
        """An image element with the server's budget on it (its own min/max_pixels within)."""
        upper = min(element.get("max_pixels", self.max_pixels), self.max_pixels)
        lower = min(max(element.get("min_pixels", self.min_pixels), self.min_pixels), upper)
        return {**element, "min_pixels": lower, "max_pixels": upper}

    def with_budget(self, messages: list[dict]) -> list[dict]:
        return [
            {**m, "content": [self._budgeted(part) for part in m["content"]]}
            if isinstance(m["content"], list)
            else m
            for m in messages
        ]

    def _budgeted(self, part: dict) -> dict:
        return self.image_element(part) if part["type"] == "image" else part

    def inputs(self, messages: list[dict]) -> dict:
        text = self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        use_pyav_reader()
        images, videos, video_kwargs = process_vision_info(
            self.with_budget(messages), return_video_kwargs=True, return_video_metadata=True
        )
        kwargs: dict[str, Any] = {}
        if videos:
            videos, metadata = (list(items) for items in zip(*videos, strict=True))
            kwargs = {"video_metadata": metadata, "videos_kwargs": {"do_resize": False}}
            kwargs.update(video_kwargs)
        return self.processor(
            text=[text], images=images, videos=videos, padding=True, return_tensors="pt", **kwargs
        )

    def run(self, messages: list[dict], max_new_tokens: int) -> ReferenceRun:
        inputs = self.inputs(messages)
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        prompt_length = inputs["input_ids"].shape[1]
        return ReferenceRun(
            input_ids=inputs["input_ids"][0].tolist(),
            generated=output[0, prompt_length:].tolist(),
            pixel_values=inputs.get("pixel_values"),
        )


def to_openai(messages: list[dict]) -> list[dict]:
    """The same conversation as an OpenAI chat request's messages (a video's options, such as
    fps or nframes, go inside its video_url object)."""
    converted = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [_openai_part(part) for part in content]
        converted.append({"role": message["role"], "content": content})
    return converted


def _openai_part(part: dict) -> dict:
    if part["type"] == "image":
        budget = {k: v for k, v in part.items() if k in ("min_pixels", "max_pixels")}
        return {"type": "image_url", "image_url": {"url": part["image"], **budget}}
    if part["type"] == "video":
        return {"type": "video_url", "video_url": to_openai_video(part)}
    return part


def to_openai_video(element: dict) -> dict:
    """A model card video element as a video_url object (its options inside)."""
    options = {k: v for k, v in element.items() if k not in ("type", "video")}
    return {"url": element["video"], **options}


def read_video_pyav(element: dict) -> tuple[torch.Tensor, dict, float]:
    """A qwen-vl-utils video reader (its `_read_video_torchvision`, with PyAV decoding as
    torchvision's read_video did): every frame decoded, then qwen-vl-utils' sampling."""
    data = base64.b64decode(element["video"].split("base64,", 1)[1])
    if data[128:132] == b"DICM":
        frames, fps = _dicom_cine(data)
    else:
        with av.open(io.BytesIO(data)) as container:
            frames = np.stack([f.to_rgb().to_ndarray() for f in container.decode(video=0)])
            fps = float(container.streams.video[0].average_rate)
    total = len(frames)
    nframes = qwen.smart_nframes(element, total_frames=total, video_fps=fps)
    idx = torch.linspace(0, total - 1, nframes).round().long()
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)[idx]
    metadata = {"fps": fps, "frames_indices": idx, "total_num_frames": total}
    return video, {**metadata, "video_backend": "pyav"}, nframes / total * fps


def _dicom_cine(data: bytes) -> tuple[np.ndarray, float]:
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.PhotometricInterpretation.startswith(("RGB", "YBR")) and ds.BitsStored == 8
    return ds.pixel_array, 1000.0 / float(ds.FrameTime)


def use_pyav_reader() -> None:
    qwen.VIDEO_READER_BACKENDS["pyav"] = read_video_pyav
    if qwen.FORCE_QWENVL_VIDEO_READER != "pyav":
        qwen.FORCE_QWENVL_VIDEO_READER = "pyav"
        qwen.get_video_reader_backend.cache_clear()
