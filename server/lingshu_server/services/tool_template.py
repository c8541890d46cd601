"""Which chat template renders a conversation with tools.

A checkpoint whose own template knows `tools` (Qwen2.5's text models do) renders them itself.
Qwen2-VL's and Qwen2.5-VL's released templates (and so Lingshu's) have no tools section; for
those, conversations with tools use QWEN_VL_TOOL_TEMPLATE: Qwen2.5's own tools section and
`<tool_call>` / `<tool_response>` turns (the format the Qwen2.5 family was trained on), with the
VL template's image and video parts. Without tools it renders exactly as the VL template does,
and conversations without tools keep using the checkpoint's template in any case.
"""

from __future__ import annotations

from typing import Any

import jinja2
import jinja2.meta

from lingshu_server.protocol.common import ChatTool

# Each part of a message, as the Qwen2-VL / Qwen2.5-VL template writes it.
_CONTENT = (
    "{% macro render_content(content) %}{% if content is string %}{{ content }}{% else %}"
    "{% for part in content %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{% endmacro %}"
)
# Qwen2.5-Instruct's tools section, word for word, after the system prompt. Text that follows a
# block tag is written as an expression: chat templates run with trim_blocks, which drops the
# newline right after a block tag.
_TOOLS_SYSTEM = (
    "<|im_start|>system\n"
    "{% if messages[0]['role'] == 'system' %}{{ render_content(messages[0]['content']) }}"
    "{% else %}You are a helpful assistant.{% endif %}"
    "{{ '\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query."
    "\\n\\nYou are provided with function signatures within <tools></tools> XML tags:"
    "\\n<tools>' }}"
    "{% for tool in tools %}{{ '\\n' }}{{ tool | tojson }}{% endfor %}"
    "{{ '\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    '{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n'
    "</tool_call><|im_end|>\\n' }}"
)
_TURNS = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and loop.first and tools %}"
    "{% elif message['role'] == 'tool' %}"
    "{% if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}<|im_start|>user"
    "{% endif %}{{ '\\n<tool_response>\\n' }}{{ render_content(message['content']) }}"
    "{{ '\\n</tool_response>' }}"
    "{% if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{ '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% elif message['role'] == 'assistant' and message['tool_calls'] %}<|im_start|>assistant"
    "{% if message['content'] %}{{ '\\n' }}{{ render_content(message['content']) }}{% endif %}"
    "{% for tool_call in message['tool_calls'] %}"
    "{% if tool_call['function'] is defined %}{% set tool_call = tool_call['function'] %}"
    "{% endif %}"
    "{{ '\\n<tool_call>\\n{\\\"name\\\": \\\"' }}{{ tool_call['name'] }}"
    "{{ '\\\", \\\"arguments\\\": ' }}{{ tool_call['arguments'] | tojson }}"
    "{{ '}\\n</tool_call>' }}"
    "{% endfor %}{{ '<|im_end|>\\n' }}"
    "{% else %}<|im_start|>{{ message['role'] }}\n{{ render_content(message['content']) }}"
    "<|im_end|>\n{% endif %}"
    "{% endfor %}"
)
QWEN_VL_TOOL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    + _CONTENT
    + "{% if tools %}"
    + _TOOLS_SYSTEM
    + "{% elif messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    + _TURNS
    + "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def handles_tools(template: str) -> bool:
    """Whether a chat template reads the `tools` variable (and so renders tool definitions)."""
    try:
        parsed = jinja2.Environment().parse(template)
    except jinja2.TemplateSyntaxError:
        return False
    return "tools" in jinja2.meta.find_undeclared_variables(parsed)


def uses_tools(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> bool:
    """A conversation needs a tool-aware template if it offers tools or holds tool turns."""
    return bool(tools) or any(
        message["role"] == "tool" or message.get("tool_calls") for message in messages
    )


def tool_definitions(tools: list[ChatTool]) -> list[dict[str, Any]]:
    """Tools as the template renders them (chat completions' shape, unset fields left out): the
    one form chat and /tokenize both send, so their token counts agree."""
    return [tool.model_dump(exclude_none=True) for tool in tools]
