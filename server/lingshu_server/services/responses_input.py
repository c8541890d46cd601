"""A Responses request as the chat request the shared runner takes, and the way back from the
runner's error params (`messages[2].content[0].image_url`) to the request's own
(`input[1].content[0].image_url`).

`instructions` become the first (system) message; input messages keep their roles and parts
(`input_text` and `output_text` as text, `input_image` as an image with the same options);
consecutive `function_call` items join the assistant turn before them as its tool calls; each
`function_call_output` becomes a `tool` message answering its call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from pydantic import ValidationError

from lingshu_server.core.errors import APIError, validation_error
from lingshu_server.protocol.chat import ChatCompletionRequest
from lingshu_server.protocol.common import (
    AssistantToolCall,
    CalledFunction,
    ChatMessage,
    ChatTool,
    ContentPart,
    FunctionDefinition,
    FunctionName,
    ImagePart,
    ImageURL,
    JSONSchemaFormat,
    NamedToolChoice,
    ResponseFormat,
    TextPart,
    ToolChoice,
)
from lingshu_server.protocol.responses import (
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionChoice,
    FunctionTool,
    InputImage,
    InputItem,
    InputText,
    MessageItem,
    OutputText,
    ResponsesRequest,
)

_MESSAGE_PARAM = re.compile(r"^messages\[(\d+)\](.*)$")
_TOOL_PARAM = re.compile(r"^tools\[(\d+)\]\.function\.(.*)$")
_RENAMED = {
    "messages": "input",
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "response_format": "text.format",
}


@dataclass
class ParamNames:
    """Where each chat message came from in the Responses request."""

    origins: list[tuple[str, bool]] = field(default_factory=list)  # (path, parts kept)

    def add(self, path: str, parts_kept: bool = True) -> None:
        self.origins.append((path, parts_kept))

    def translate(self, param: str | None) -> str | None:
        if param is None:
            return None
        if match := _MESSAGE_PARAM.match(param):
            path, parts_kept = self.origins[int(match.group(1))]
            return path + match.group(2) if parts_kept else path
        if match := _TOOL_PARAM.match(param):
            return f"tools[{match.group(1)}].{match.group(2)}"
        return _RENAMED.get(param, param)

    def renamed(self, exc: APIError) -> APIError:
        exc.param = self.translate(exc.param)
        return exc


def to_chat(
    request: ResponsesRequest, earlier: list[InputItem] | None = None, earlier_param: str = ""
) -> tuple[ChatCompletionRequest, ParamNames]:
    """The chat request; `earlier` are the items before the input (a stored chain's or a
    conversation's), whose errors are reported against `earlier_param`."""
    names = ParamNames()
    messages: list[ChatMessage] = []
    if request.instructions is not None:
        messages.append(ChatMessage(role="system", content=request.instructions))
        names.add("instructions", parts_kept=False)
    for item in earlier or []:
        _add_item(item, earlier_param, messages, names)
        names.origins[-1] = (earlier_param, False)
    if isinstance(request.input, str):
        messages.append(ChatMessage(role="user", content=request.input))
        names.add("input", parts_kept=False)
    else:
        for i, item in enumerate(request.input):
            _add_item(item, f"input[{i}]", messages, names)
    try:
        chat = ChatCompletionRequest(
            messages=messages,
            model=request.model,
            max_tokens=request.max_output_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            seed=request.seed,
            response_format=_response_format(request),
            tools=[_chat_tool(tool) for tool in request.tools] if request.tools else None,
            tool_choice=_chat_tool_choice(request.tool_choice),
            parallel_tool_calls=request.parallel_tool_calls,
            request_timeout=request.request_timeout,
        )
    except ValidationError as exc:  # a rule only the chat request states (none known today)
        raise names.renamed(validation_error(exc)) from None
    return chat, names


def _add_item(item: InputItem, path: str, messages: list[ChatMessage], names: ParamNames) -> None:
    if isinstance(item, MessageItem):
        content: str | list[ContentPart] = (
            item.content
            if isinstance(item.content, str)
            else [_chat_part(part) for part in item.content]
        )
        messages.append(ChatMessage(role=item.role, content=content))
        names.add(path)
    elif isinstance(item, FunctionCallItem):
        call = AssistantToolCall(
            id=item.call_id, function=CalledFunction(name=item.name, arguments=item.arguments)
        )
        last = messages[-1] if messages else None
        if last is not None and last.role == "assistant":
            last.tool_calls = [*(last.tool_calls or []), call]
        else:
            messages.append(ChatMessage(role="assistant", tool_calls=[call]))
            names.add(path, parts_kept=False)
    else:
        assert isinstance(item, FunctionCallOutputItem)
        output = item.output
        if not isinstance(output, str):
            output = "".join(part.text for part in output)
        messages.append(ChatMessage(role="tool", content=output, tool_call_id=item.call_id))
        names.add(f"{path}.output", parts_kept=False)


def _chat_part(part: InputText | OutputText | InputImage) -> TextPart | ImagePart:
    if isinstance(part, InputImage):
        assert part.image_url is not None  # checked by InputImage
        url = ImageURL(
            url=part.image_url,
            detail=part.detail,
            min_pixels=part.min_pixels,
            max_pixels=part.max_pixels,
            dicom=part.dicom,
        )
        return ImagePart(type="image_url", image_url=url)
    return TextPart(type="text", text=part.text)


def _response_format(request: ResponsesRequest) -> ResponseFormat | None:
    fmt = request.text.format if request.text else None
    if fmt is None:
        return None
    schema = None
    if fmt.type == "json_schema":
        schema = JSONSchemaFormat.model_validate(
            {
                "name": fmt.name,
                "description": fmt.description,
                "schema": fmt.schema_,
                "strict": fmt.strict,
            }
        )
    return ResponseFormat(type=fmt.type, json_schema=schema, allow_whitespace=fmt.allow_whitespace)


def _chat_tool(tool: FunctionTool) -> ChatTool:
    function = FunctionDefinition(
        name=tool.name, description=tool.description, parameters=tool.parameters, strict=tool.strict
    )
    return ChatTool(type="function", function=function)


def _chat_tool_choice(
    choice: Literal["none", "auto", "required"] | FunctionChoice | None,
) -> ToolChoice | None:
    if isinstance(choice, FunctionChoice):
        return NamedToolChoice(type="function", function=FunctionName(name=choice.name))
    return choice
