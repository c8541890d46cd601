"""Which template renders tools, and what it writes: Qwen2.5's tools section and tool turns,
and, without tools, exactly what the checkpoint's own (Qwen2.5-VL) template writes."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from lingshu_server.demo_model import CHAT_TEMPLATE, ensure_demo_model
from lingshu_server.services.chat_prompt import template_renderer
from lingshu_server.services.tool_template import QWEN_VL_TOOL_TEMPLATE, handles_tools

IMAGE = {"type": "image"}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
CONVERSATIONS = {
    "one user turn": [{"role": "user", "content": "hi"}],
    "system, images, turns": [
        {"role": "system", "content": "You read radiographs."},
        {"role": "user", "content": [IMAGE, {"type": "text", "text": "Findings?"}, IMAGE]},
        {"role": "assistant", "content": "Clear lungs."},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "And this?"}]},
    ],
    "system as parts": [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": "hi"},
    ],
}


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(ensure_demo_model()))


def render(tokenizer, template: str, messages: list, **kwargs) -> str:
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=True, **kwargs
    )


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("vision_ids", [False, True])
def test_without_tools_it_writes_what_the_checkpoint_template_writes(tokenizer, name, vision_ids):
    messages = CONVERSATIONS[name]
    ours = render(tokenizer, QWEN_VL_TOOL_TEMPLATE, messages, add_vision_id=vision_ids)
    assert ours == render(tokenizer, CHAT_TEMPLATE, messages, add_vision_id=vision_ids)


def test_tools_and_tool_turns_in_qwen25_format(tokenizer):
    messages = [
        {"role": "system", "content": "You read radiographs."},
        {"role": "user", "content": [IMAGE, {"type": "text", "text": "Weather?"}]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                },
                {
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Rome"}},
                },
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "a"},
        {"role": "tool", "content": "rain", "tool_call_id": "b"},
    ]
    tool_json = (
        '{"type": "function", "function": {"name": "get_weather", "description": "Weather for '
        'a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}'
    )
    assert render(tokenizer, QWEN_VL_TOOL_TEMPLATE, messages, tools=TOOLS) == (
        "<|im_start|>system\nYou read radiographs.\n\n# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        f"{tool_json}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Weather?<|im_end|>\n"
        "<|im_start|>assistant\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
        "<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n"
        "<tool_response>\nrain\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_default_system_prompt_with_tools(tokenizer):
    text = render(
        tokenizer, QWEN_VL_TOOL_TEMPLATE, [{"role": "user", "content": "hi"}], tools=TOOLS
    )
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n\n")
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_a_checkpoint_template_that_knows_tools_renders_them(tokenizer):
    assert not handles_tools(CHAT_TEMPLATE)
    assert handles_tools(QWEN_VL_TOOL_TEMPLATE)
    own = "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if tools %}[TOOLS]{% endif %}"
    render_own = template_renderer(tokenizer, own)
    assert render_own([{"role": "user", "content": "hi"}], TOOLS) == "hi[TOOLS]"
    # a checkpoint without a tools section: its own template until tools appear
    render_vl = template_renderer(tokenizer, CHAT_TEMPLATE)
    hi = [{"role": "user", "content": "hi"}]
    assert render_vl(hi) == render(tokenizer, CHAT_TEMPLATE, hi)
    assert "# Tools" in render_vl(hi, TOOLS)
