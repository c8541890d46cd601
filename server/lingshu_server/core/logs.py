"""Logs: JSON lines carrying the request id for programs, text lines for a person at a terminal;
the access log and the audit log.

Nothing here ever receives prompt text, image bytes or DICOM headers: the access and audit
records are built from RequestContext, which holds counts, hashes and ids only. The audit log
alone also records where a DICOMweb image came from (PACS host, Study/Series/SOP UIDs) and, for a
drafted report, its id, hashes and the UIDs of its SR (where it was stored).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, Literal

from lingshu_server.core import request_context
from lingshu_server.core.request_context import RequestContext

access_logger = logging.getLogger("lingshu_server.access")


class RequestIdFilter(logging.Filter):
    """Stamp every record with the id of the request being served, if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = request_context.get()
        record.request_id = ctx.request_id if ctx else None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            # UTC, in vLLM's processes too (they never run configure_logging)
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """One line a person reads: time, level, logger, message, then the fields as key=value.

    A record may carry `text_lines`: what to print instead of its message and fields (the
    first line after the level, the rest indented below), for the one block a person should
    not miss (the ready message)."""

    def format(self, record: logging.LogRecord) -> str:
        # the clock on the reader's wall; JSON lines stay in UTC
        when = time.strftime("%m-%d %H:%M:%S", time.localtime(record.created))
        head = f"{when} {record.levelname:<7} {short_logger_name(record.name)}:"
        lines: list[str] | None = getattr(record, "text_lines", None)
        if lines:
            text = f"{head} {lines[0]}" + "".join(f"\n    {line}" for line in lines[1:])
        else:
            fields = dict(getattr(record, "fields", None) or {})
            request_id = getattr(record, "request_id", None)
            if request_id and "request_id" not in fields:
                fields = {"request_id": request_id, **fields}
            text = " ".join([f"{head} {record.getMessage()}", *_key_values(fields)])
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def short_logger_name(name: str) -> str:
    """`lingshu_server.core.lifecycle` -> `lifecycle`; another package's logger -> its package
    (`vllm.v1.engine.core` -> `vllm`, `uvicorn.error` -> `uvicorn`)."""
    parts = name.split(".")
    return parts[-1] if parts[0] == "lingshu_server" else parts[0]


def _key_values(fields: dict[str, Any]) -> list[str]:
    pairs = []
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, str):
            text = json.dumps(value, ensure_ascii=False) if _needs_quotes(value) else value
        elif isinstance(value, (dict, list, tuple)):
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
        else:
            text = str(value)
        pairs.append(f"{key}={text}")
    return pairs


def _needs_quotes(value: str) -> bool:
    return not value or any(c.isspace() or c in '"=' for c in value)


# Start-up records a program reading JSON wants and a person at a terminal does not: text
# lines leave them out below --log-level debug (never a warning or an error).
TEXT_DETAIL: dict[str, tuple[str, ...]] = {
    "lingshu_server.app": ("image budget", "tool calls"),
    "lingshu_server.engine.vllm_engine": ("engine arguments", "engine configuration"),
    # the ready message says where the server listens, and only once it answers
    "uvicorn.error": (
        "Started server process",
        "Waiting for application startup",
        "Application startup complete",
        "Uvicorn running on",
    ),
}


class TextDetailFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        prefixes = TEXT_DETAIL.get(record.name)
        if not prefixes or record.levelno != logging.INFO:
            return True
        return not record.getMessage().startswith(prefixes)


LogFormat = Literal["auto", "text", "json"]


def resolve_log_format(fmt: LogFormat, stream: IO[str]) -> Literal["text", "json"]:
    """`auto`: text for a person when the stream is a terminal, JSON lines otherwise."""
    if fmt != "auto":
        return fmt
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return "json"


def _vllm_logging_config(level: str, fmt: Literal["text", "json"]) -> dict[str, Any]:
    """vLLM configures its own loggers in every process it spawns (the engine core too);
    hand it ours through VLLM_LOGGING_CONFIG_PATH so those lines have our format as well."""
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    handler: dict[str, Any] = {"class": "logging.StreamHandler", "formatter": fmt, "level": level}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {fmt: {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {fmt: handler},
        "loggers": {"vllm": {"handlers": [fmt], "level": level, "propagate": False}},
    }


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def configure_logging(
    level: str, fmt: LogFormat, stream: IO[str] | None = None
) -> Literal["text", "json"]:
    """One handler on the root logger, writing to `stream` (standard error by default);
    uvicorn's and vLLM's loggers propagate to it. Returns the format chosen."""
    stream = stream if stream is not None else sys.stderr
    chosen = resolve_log_format(fmt, stream)
    if "VLLM_LOGGING_CONFIG_PATH" not in os.environ:
        # vLLM's processes (the engine core is spawned later) read the file at start-up, so it
        # lives as long as this process, and no longer.
        fd, name = tempfile.mkstemp(prefix="lingshu-vllm-logging-", suffix=".json")
        with os.fdopen(fd, "w") as config:
            json.dump(_vllm_logging_config(level.upper(), chosen), config)
        atexit.register(_remove, Path(name))
        os.environ["VLLM_LOGGING_CONFIG_PATH"] = name
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    if chosen == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
        if level.lower() != "debug":
            handler.addFilter(TextDetailFilter())
    logging.Formatter.converter = time.gmtime
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Our access log replaces uvicorn's, which would log the raw request line.
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every request's full URL at INFO: image URLs carry DICOM UIDs and tokens.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Alembic says which dialect it migrates at INFO, on every start-up.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return chosen


def request_record(ctx: RequestContext, latency_s: float) -> dict[str, Any]:
    return {
        "request_id": ctx.request_id,
        "key_id": ctx.key_id,
        "identity": ctx.identity,
        "tenant": ctx.tenant,
        "method": ctx.method,
        "route": ctx.route,
        "status": ctx.status,
        "latency_ms": round(latency_s * 1000, 1),
        "prompt_tokens": ctx.prompt_tokens,
        "completion_tokens": ctx.completion_tokens,
        "cached_tokens": ctx.cached_tokens,
        "images": len(ctx.images),
        "client_disconnected": ctx.client_disconnected,
        "stream_error": ctx.stream_error,
    }


def log_access(ctx: RequestContext, latency_s: float) -> None:
    access_logger.info("request", extra={"fields": request_record(ctx, latency_s)})


class AuditLog:
    """Append-only JSON lines for hospital audit trails: who asked what of which image hash."""

    def __init__(self, path: Path):
        self._path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, ctx: RequestContext, latency_s: float) -> None:
        record = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **request_record(ctx, latency_s),
            "images": [
                {
                    "sha256": image.sha256,
                    "format": image.format,
                    "bytes": image.encoded_bytes,
                    "width": image.width,
                    "height": image.height,
                    "tokens": image.tokens,
                    **({"dicomweb": image.source} if image.source else {}),
                }
                for image in ctx.images
            ],
            **({"stored": ctx.stored} if ctx.stored else {}),
            **({"report": ctx.report} if ctx.report else {}),
        }
        line = json.dumps(record) + "\n"
        with self._lock, self._path.open("a", encoding="utf-8") as file:
            file.write(line)
