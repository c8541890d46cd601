"""--log-format auto|text|json: text lines for a person at a terminal, JSON lines for programs
(a pipe or a file), and vLLM's loggers told the same."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import os
import pty
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import IO

import pytest

from lingshu_server.core.logs import (
    JsonFormatter,
    TextFormatter,
    _vllm_logging_config,
    configure_logging,
    resolve_log_format,
    short_logger_name,
)
from lingshu_server.core.settings import Settings

TEXT_LINE = re.compile(r"^\d\d-\d\d \d\d:\d\d:\d\d (INFO|WARNING|ERROR|DEBUG) +[\w.]+: ")


@pytest.fixture
def terminal() -> Iterator[IO[str]]:
    main, secondary = pty.openpty()
    stream = os.fdopen(secondary, "w")
    try:
        yield stream
    finally:
        stream.close()
        os.close(main)


@pytest.fixture
def pipe() -> Iterator[IO[str]]:
    read, write = os.pipe()
    stream = os.fdopen(write, "w")
    try:
        yield stream
    finally:
        stream.close()
        os.close(read)


@pytest.fixture
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """configure_logging changes process-wide state: put it back after the test."""
    monkeypatch.setenv("VLLM_LOGGING_CONFIG_PATH", "/nonexistent/left-alone.json")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    uvicorn = {name: logging.getLogger(name) for name in ("uvicorn", "uvicorn.error")}
    saved = {name: (lg.handlers[:], lg.propagate) for name, lg in uvicorn.items()}
    access_disabled = logging.getLogger("uvicorn.access").disabled
    httpx_level = logging.getLogger("httpx").level
    converter = logging.Formatter.converter
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, (lg_handlers, propagate) in saved.items():
        uvicorn[name].handlers[:] = lg_handlers
        uvicorn[name].propagate = propagate
    logging.getLogger("uvicorn.access").disabled = access_disabled
    logging.getLogger("httpx").setLevel(httpx_level)
    logging.Formatter.converter = converter


def record(name: str = "lingshu_server.core.lifecycle", message: str = "stage ready", **extra):
    entry = logging.LogRecord(name, logging.INFO, __file__, 1, message, None, None)
    entry.__dict__.update(extra)
    return entry


def test_auto_is_text_on_a_terminal_and_json_on_a_pipe(terminal, pipe):
    assert resolve_log_format("auto", terminal) == "text"
    assert resolve_log_format("auto", pipe) == "json"
    assert resolve_log_format("auto", io.StringIO()) == "json"  # no terminal behind it
    closed = io.StringIO()
    closed.close()
    assert resolve_log_format("auto", closed) == "json"


def test_an_explicit_format_wins_over_the_terminal(terminal, pipe):
    assert resolve_log_format("json", terminal) == "json"
    assert resolve_log_format("text", pipe) == "text"


def test_auto_is_the_default_and_the_flag_takes_three_values(monkeypatch):
    monkeypatch.delenv("LINGSHU_LOG_FORMAT", raising=False)
    assert Settings().log_format == "auto"
    for value in ("auto", "text", "json"):
        monkeypatch.setenv("LINGSHU_LOG_FORMAT", value)
        assert Settings().log_format == value


def test_configure_logging_on_a_terminal_writes_text(terminal, restore_logging):
    assert configure_logging("info", "auto", terminal) == "text"
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler.formatter, TextFormatter)
    assert handler.stream is terminal


def test_configure_logging_on_a_pipe_writes_json_lines(pipe, restore_logging):
    assert configure_logging("info", "auto", pipe) == "json"
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler.formatter, JsonFormatter)


def test_configure_logging_follows_standard_error_by_default(restore_logging, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(stream, "isatty", lambda: True)
    assert configure_logging("info", "auto") == "text"
    logging.getLogger("lingshu_server.app").info("hello", extra={"fields": {"port": 8000}})
    line = stream.getvalue().rstrip("\n")
    assert TEXT_LINE.match(line) and line.endswith(" app: hello port=8000")


def test_text_line_has_time_level_short_name_message_and_key_values():
    formatter = TextFormatter()
    fields = {
        "stage": "ready",
        "elapsed_s": 1.5,
        "note": "two words",
        "empty": "",
        "sizes": [1, 2],
        "key_id": None,  # nothing to say: left out
    }
    line = formatter.format(record(fields=fields, request_id="req-1"))
    assert TEXT_LINE.match(line)
    _, _, level, rest = line.split(" ", 3)
    assert level == "INFO"
    assert rest.lstrip() == (
        'lifecycle: stage ready request_id=req-1 stage=ready elapsed_s=1.5 note="two words" '
        'empty="" sizes=[1,2]'
    )
    assert "{" not in line.replace("[1,2]", "")  # no JSON blob


def test_text_line_of_a_foreign_logger_names_its_package():
    assert short_logger_name("lingshu_server.core.lifecycle") == "lifecycle"
    assert short_logger_name("vllm.v1.engine.core") == "vllm"
    assert short_logger_name("uvicorn.error") == "uvicorn"
    line = TextFormatter().format(record("vllm.config.model", "Using max model len 8192"))
    assert line.endswith(" vllm: Using max model len 8192")


def test_text_lines_replace_message_and_fields_with_a_block():
    entry = record(
        "lingshu_server.app",
        "ready",
        fields={"url": "http://127.0.0.1:8000"},
        text_lines=["ready: demo on http://127.0.0.1:8000", "playground  /playground"],
    )
    first, second = TextFormatter().format(entry).split("\n")
    assert first.endswith(" app: ready: demo on http://127.0.0.1:8000")
    assert second == "    playground  /playground"
    assert "text_lines" not in JsonFormatter().format(entry)


def test_text_keeps_the_exception():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        entry = record(exc_info=sys.exc_info())
    text = TextFormatter().format(entry)
    assert "Traceback" in text and "RuntimeError: boom" in text


def test_json_still_writes_one_object_a_line():
    entry = record(fields={"stage": "ready"}, request_id="req-1")
    line = JsonFormatter().format(entry)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["ts"].endswith("Z") and parsed["level"] == "info"
    assert parsed["logger"] == "lingshu_server.core.lifecycle"
    assert parsed["message"] == "stage ready" and parsed["stage"] == "ready"
    assert parsed["request_id"] == "req-1"


def test_text_hides_start_up_detail_but_never_a_warning(restore_logging):
    stream = io.StringIO()
    configure_logging("info", "text", stream)
    app = logging.getLogger("lingshu_server.app")
    app.info("image budget", extra={"fields": {"min_pixels": 1}})
    logging.getLogger("uvicorn.error").info("Uvicorn running on http://127.0.0.1:8000")
    logging.getLogger("uvicorn.error").warning("Uvicorn running on something odd")
    app.warning("image budget", extra={"fields": {"min_pixels": 1}})
    app.info("ready")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert "WARNING" in lines[0] and "WARNING" in lines[1] and lines[2].endswith("app: ready")


def test_debug_level_shows_start_up_detail_in_text(restore_logging):
    stream = io.StringIO()
    configure_logging("debug", "text", stream)
    logging.getLogger("lingshu_server.app").info("image budget")
    assert stream.getvalue().rstrip().endswith("app: image budget")


def test_json_keeps_start_up_detail(restore_logging):
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    logging.getLogger("lingshu_server.app").info("image budget")
    assert json.loads(stream.getvalue())["message"] == "image budget"


@pytest.mark.parametrize(("fmt", "formatter"), [("json", JsonFormatter), ("text", TextFormatter)])
def test_vllm_loggers_get_the_same_format(fmt, formatter):
    config = _vllm_logging_config("INFO", fmt)
    (spec,) = config["formatters"].values()
    assert spec["()"] == f"lingshu_server.core.logs.{formatter.__name__}"
    logging.config.dictConfig({**config, "loggers": {}})  # the file vLLM's processes load


VLLM_CONFIG_SCRIPT = """
import json, os, sys
from lingshu_server.core.logs import configure_logging
os.environ.pop("VLLM_LOGGING_CONFIG_PATH", None)
print(configure_logging("info", sys.argv[1]))
with open(os.environ["VLLM_LOGGING_CONFIG_PATH"]) as file:
    print(next(iter(json.load(file)["formatters"].values()))["()"])
"""


@pytest.mark.parametrize(
    ("stderr", "chosen", "formatter"),
    [(subprocess.PIPE, "json", "JsonFormatter"), ("terminal", "text", "TextFormatter")],
)
def test_the_vllm_config_file_follows_auto(stderr, chosen, formatter):
    main = None
    if stderr == "terminal":
        main, stderr = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-c", VLLM_CONFIG_SCRIPT, "auto"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        if main is not None:
            os.close(main)
            os.close(stderr)
    assert result.stdout.split() == [chosen, f"lingshu_server.core.logs.{formatter}"]
