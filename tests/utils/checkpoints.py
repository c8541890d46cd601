"""Variants of the demo checkpoint that differ from it in one file, the rest symlinked (as
lingshu_server.demo_model.derive_demo_model makes its variants)."""

from __future__ import annotations

import json
from pathlib import Path

from lingshu_server.demo_model import CHAT_TEMPLATE, ensure_demo_model

# The template's branch that writes a video part as <|vision_start|><|video_pad|><|vision_end|>
_VIDEO_BRANCH_START = "{% elif content['type'] == 'video'"
_VIDEO_BRANCH_END = "{% elif 'text' in content %}"


def template_without_video() -> str:
    """The demo's chat template without its video branch: a video part writes nothing, as in
    the template of a checkpoint fine-tuned on images alone."""
    start = CHAT_TEMPLATE.index(_VIDEO_BRANCH_START)
    end = CHAT_TEMPLATE.index(_VIDEO_BRANCH_END)
    template = CHAT_TEMPLATE[:start] + CHAT_TEMPLATE[end:]
    assert "<|video_pad|>" not in template
    return template


def checkpoint_without_video(target: Path) -> Path:
    """The demo checkpoint whose chat template cannot express video."""
    source = ensure_demo_model()
    target.mkdir(parents=True, exist_ok=True)
    rewritten = {"chat_template.jinja", "chat_template.json", "tokenizer_config.json"}
    for item in source.iterdir():
        if item.name not in rewritten and not item.name.startswith("."):
            (target / item.name).symlink_to(item)
    template = template_without_video()
    (target / "chat_template.jinja").write_text(template)
    (target / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    config = json.loads((source / "tokenizer_config.json").read_text())
    (target / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template}))
    return target
