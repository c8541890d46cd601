"""Function tools: what a request allows, the grammar that makes every call parse and validate,
and the model's `<tool_call>` text read back as OpenAI tool calls, whole or as it streams.

The Qwen2.5 format (see tool_template): each call is

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

and several calls follow one another, one per line. Whenever calls are allowed (tool_choice
`auto`, `required` or a named function), decoding follows a grammar built from the functions'
JSON schemas (xgrammar's structural tags around the same argument grammars as response_format):
with `auto` the model writes any text, but once it opens `<tool_call>` it must finish a call to
a declared function with arguments that satisfy its schema; with `required` or a named function
the answer is calls only. A call that still does not parse (an answer cut off by max_tokens) is
returned as text, never as a broken call.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from threading import Lock
from typing import Any, Literal

from jsonschema import Draft202012Validator

from lingshu_server.core.errors import InvalidRequestError
from lingshu_server.protocol.chat import ChatCompletionRequest
from lingshu_server.protocol.common import NamedToolChoice, ResponseFormat, tool_call_id
from lingshu_server.services.structured_output import StructuredOutput, format_schema
from lingshu_server.services.tool_template import tool_definitions

CALL_OPEN = "<tool_call>"
CALL_HEAD = CALL_OPEN + '\n{"name": "'
ARGUMENTS_KEY = '", "arguments": '
CALL_END = "}\n</tool_call>"
CALL_SEPARATOR = "\n"
# json.dumps' separators, as the template writes earlier calls (`tojson`): no free whitespace,
# so a weak model cannot pad, and calls look as the model has seen them.
ARGUMENT_SEPARATORS = (", ", ": ")
# With parallel_tool_calls, at most this many calls in one answer.
MAX_PARALLEL_CALLS = 16
NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}}
_HEAD = re.compile(r'\A\s*\{\s*"name"\s*:\s*"([A-Za-z0-9_-]{1,64})"\s*,\s*"arguments"\s*:\s*(?=\S)')
# A head longer than this without matching is not a call head.
_MAX_HEAD_CHARS = 160


@dataclass(frozen=True)
class Function:
    name: str
    parameters: dict[str, Any]
    param: str  # where its schema is in the request, for errors


@dataclass(frozen=True, kw_only=True)
class ToolUse:
    """The tools a request offers and how it lets the model use them."""

    functions: tuple[Function, ...]
    definitions: list[dict[str, Any]] = field(hash=False)  # for the chat template
    choice: Literal["none", "auto", "required", "forced"]
    forced: str | None  # the function a named tool_choice forces
    parallel: bool

    @classmethod
    def from_chat(cls, request: ChatCompletionRequest) -> ToolUse | None:
        if not request.tools:
            return None
        functions = tuple(
            Function(
                tool.function.name,
                tool.function.parameters or NO_ARGUMENTS,
                f"tools[{i}].function.parameters",
            )
            for i, tool in enumerate(request.tools)
        )
        definitions = tool_definitions(request.tools)
        choice = request.tool_choice or "auto"
        return cls(
            functions=functions,
            definitions=definitions,
            choice="forced" if isinstance(choice, NamedToolChoice) else choice,
            forced=choice.function.name if isinstance(choice, NamedToolChoice) else None,
            parallel=bool(request.parallel_tool_calls),
        )

    @property
    def calls_allowed(self) -> bool:
        return self.choice != "none"

    def callable(self) -> tuple[Function, ...]:
        return tuple(f for f in self.functions if self.forced in (None, f.name))

    def function(self, name: str) -> Function | None:
        return next((f for f in self.callable() if f.name == name), None)


class ToolGrammars:
    """The grammar for a request with tools, built in the worker pool and cached."""

    def __init__(self, structured: StructuredOutput, capacity: int = 256):
        self._structured = structured
        self._capacity = capacity
        self._grammars: OrderedDict[str, str] = OrderedDict()
        self._lock = Lock()

    async def grammar(self, use: ToolUse | None, fmt: ResponseFormat | None) -> str | None:
        if use is None:
            return await self._structured.grammar(fmt)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._structured.pool, self._build, use, fmt)

    def _build(self, use: ToolUse, fmt: ResponseFormat | None) -> str | None:
        # Every tool's schema is checked, whichever tool_choice: a tool is either usable or a 400.
        arguments = {f.name: self._arguments(f) for f in use.functions}
        if not use.calls_allowed:
            return self._structured.format_grammar(fmt)
        key = json.dumps(
            [[f.name, f.parameters] for f in use.callable()]
            + [use.choice, use.parallel, format_schema(fmt), bool(fmt and fmt.allow_whitespace)],
            sort_keys=True,
        )
        with self._lock:
            if key in self._grammars:
                self._grammars.move_to_end(key)
                return self._grammars[key]
        answer = self._structured.format_grammar(fmt)
        grammar = _call_grammar(use, arguments, answer)
        with self._lock:
            self._grammars[key] = grammar
            while len(self._grammars) > self._capacity:
                self._grammars.popitem(last=False)
        return grammar

    def _arguments(self, function: Function) -> str:
        try:
            return self._structured.cache.grammar(function.parameters, False, ARGUMENT_SEPARATORS)
        except InvalidRequestError as exc:
            exc.param = function.param
            raise


def _call_grammar(use: ToolUse, arguments: dict[str, str], answer: str | None) -> str:
    """EBNF for the calls `use` allows; `answer`: the response_format's grammar, if any."""
    import xgrammar
    from xgrammar import structural_tag as st

    tags = [
        st.TagFormat(
            begin=CALL_HEAD + f.name + ARGUMENTS_KEY,
            content=st.GrammarFormat(grammar=arguments[f.name]),
            end=CALL_END,
        )
        for f in use.callable()
    ]
    one_call: st.Format = tags[0] if len(tags) == 1 else st.OrFormat(elements=[*tags])
    calls: st.Format = one_call
    if use.parallel:
        more = st.SequenceFormat(elements=[st.ConstStringFormat(value=CALL_SEPARATOR), one_call])
        calls = st.SequenceFormat(
            elements=[one_call, st.RepeatFormat(min=0, max=MAX_PARALLEL_CALLS - 1, content=more)]
        )
    if use.choice in ("required", "forced"):
        root = calls
    elif answer is not None:  # auto with a response_format: its JSON, or calls
        root = st.OrFormat(elements=[st.GrammarFormat(grammar=answer), calls])
    else:  # auto: any text, and every call it opens is a valid one
        root = st.TriggeredTagsFormat(
            triggers=[CALL_OPEN], tags=tags, stop_after_first=not use.parallel
        )
    return str(xgrammar.Grammar.from_structural_tag(st.StructuralTag(format=root)))


# ---------------------------------------------------------------- reading the output


@dataclass
class ContentDelta:
    text: str


@dataclass
class CallStarted:
    index: int
    id: str
    name: str


@dataclass
class ArgumentsDelta:
    index: int
    text: str


@dataclass
class CallFinished:
    index: int


ToolEvent = ContentDelta | CallStarted | ArgumentsDelta | CallFinished


@dataclass(kw_only=True)
class ParsedCall:
    id: str
    name: str
    arguments: str = ""
    complete: bool = False


def _held_back(text: str, marker: str) -> int:
    """Length of the longest end of `text` that could be the start of `marker`."""
    for length in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-length:]):
            return length
    return 0


class ToolCallReader:
    """Reads generated text as it arrives: content, and calls as soon as they are certain.

    Text that may be the start of `<tool_call>` is held back until it is known; a call's
    first event comes when its name is complete, then its arguments in fragments, never the
    closing `}` and tag. Whitespace next to calls is not content.
    """

    def __init__(self, use: ToolUse):
        self._use = use
        self._state: Literal["text", "head", "arguments"] = "text"
        self._buffer = ""
        self._space = ""  # whitespace held until text follows it
        self._after_call = False
        self.calls: list[ParsedCall] = []
        self.content: list[str] = []
        self.broken = False  # a call that did not parse (cut off or malformed)

    def feed(self, text: str) -> list[ToolEvent]:
        self._buffer += text
        events: list[ToolEvent] = []
        progressed = True
        while progressed:
            progressed = getattr(self, f"_read_{self._state}")(events)
        return events

    def finish(self) -> list[ToolEvent]:
        events: list[ToolEvent] = []
        if self._state == "text":
            # the start of a `<tool_call>` after calls: cut off before the next call
            self.broken = self.broken or bool(self.calls and self._buffer)
            self._text(self._buffer, events)
            if not self.calls and self._space:
                events.append(self._content(self._space))
        elif self._state == "head":
            self.broken = True
            self._text(CALL_OPEN + self._buffer, events)
        else:  # cut off inside the arguments
            self.broken = True
            if self._buffer:
                self.calls[-1].arguments += self._buffer
                events.append(ArgumentsDelta(len(self.calls) - 1, self._buffer))
        self._buffer = self._space = ""
        return events

    def _read_text(self, events: list[ToolEvent]) -> bool:
        start = self._buffer.find(CALL_OPEN)
        if start < 0:
            keep = _held_back(self._buffer, CALL_OPEN)
            self._text(self._buffer[: len(self._buffer) - keep], events)
            self._buffer = self._buffer[len(self._buffer) - keep :]
            return False
        self._text(self._buffer[:start], events)
        self._space = ""  # whitespace before a call is not content
        self._buffer = self._buffer[start + len(CALL_OPEN) :]
        self._state = "head"
        return True

    def _read_head(self, events: list[ToolEvent]) -> bool:
        match = _HEAD.match(self._buffer)
        function = self._use.function(match.group(1)) if match else None
        if function is None or match is None:
            if match or len(self._buffer) > _MAX_HEAD_CHARS or "</tool_call>" in self._buffer:
                self.broken = True  # not a call after all: its text is content
                self._text(CALL_OPEN + self._buffer, events)
                self._buffer = ""
                self._state = "text"
            return False
        call = ParsedCall(id=tool_call_id(), name=function.name)
        self.calls.append(call)
        events.append(CallStarted(len(self.calls) - 1, call.id, call.name))
        self._buffer = self._buffer[match.end() :]
        self._state = "arguments"
        return True

    def _read_arguments(self, events: list[ToolEvent]) -> bool:
        end = self._buffer.find(CALL_END)
        done = end >= 0
        cut = end if done else len(self._buffer) - _held_back(self._buffer, CALL_END)
        if cut > 0:
            self.calls[-1].arguments += self._buffer[:cut]
            events.append(ArgumentsDelta(len(self.calls) - 1, self._buffer[:cut]))
        if not done:
            self._buffer = self._buffer[cut:]
            return False
        self.calls[-1].complete = True
        events.append(CallFinished(len(self.calls) - 1))
        self._after_call = True
        self._buffer = self._buffer[end + len(CALL_END) :]
        self._state = "text"
        return True

    def _text(self, text: str, events: list[ToolEvent]) -> None:
        if self._after_call:  # whitespace right after a call is not content
            text = text.lstrip()
            self._after_call = not text
        body = text.rstrip()
        if body:
            events.append(self._content(self._space + body))
            self._space = ""
        self._space += text[len(body) :]  # held until text follows it

    def _content(self, text: str) -> ContentDelta:
        self.content.append(text)
        return ContentDelta(text)


@dataclass
class ReadAnswer:
    content: str | None
    calls: list[ParsedCall]


def read_answer(text: str, use: ToolUse) -> ReadAnswer:
    """A whole answer: its calls when every one parses and validates, else all of it as text."""
    reader = ToolCallReader(use)
    reader.feed(text)
    reader.finish()
    if not reader.calls:
        return ReadAnswer(text, [])
    if reader.broken or not all(_valid(call, use) for call in reader.calls):
        return ReadAnswer(text, [])
    content = "".join(reader.content).strip()
    return ReadAnswer(content or None, reader.calls)


def _valid(call: ParsedCall, use: ToolUse) -> bool:
    function = use.function(call.name)
    if function is None or not call.complete:
        return False
    try:
        arguments = json.loads(call.arguments)
    except ValueError:
        return False
    if not isinstance(arguments, dict):
        return False
    checker = Draft202012Validator.FORMAT_CHECKER  # draft 2020-12's formats (time with offset)
    validator = Draft202012Validator(function.parameters, format_checker=checker)
    return validator.is_valid(arguments)
