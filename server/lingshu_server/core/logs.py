"""Structured logs: JSON lines carrying the request id; the access log and the audit log.

Nothing here ever receives prompt text, image bytes or DICOM headers: the access and audit
records are built from RequestContext, which holds counts, hashes and ids only. The audit log
alone also records where a DICOMweb image came from (PACS host, Study/Series/SOP UIDs).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

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
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
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
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id:
            text = f"{text} [request_id={request_id}]"
        fields = getattr(record, "fields", None)
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return text


def _vllm_logging_config(level: str) -> dict[str, Any]:
    """vLLM configures its own loggers in every process it spawns (the engine core too);
    hand it ours through VLLM_LOGGING_CONFIG_PATH so those lines are JSON as well."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "json": {"class": "logging.StreamHandler", "formatter": "json", "level": level}
        },
        "loggers": {"vllm": {"handlers": ["json"], "level": level, "propagate": False}},
    }


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def configure_logging(level: str, fmt: str) -> None:
    """One handler on the root logger; uvicorn's and vLLM's loggers propagate to it."""
    if fmt == "json" and "VLLM_LOGGING_CONFIG_PATH" not in os.environ:
        # vLLM's processes (the engine core is spawned later) read the file at start-up, so it
        # lives as long as this process, and no longer.
        fd, name = tempfile.mkstemp(prefix="lingshu-vllm-logging-", suffix=".json")
        with os.fdopen(fd, "w") as config:
            json.dump(_vllm_logging_config(level.upper()), config)
        atexit.register(_remove, Path(name))
        os.environ["VLLM_LOGGING_CONFIG_PATH"] = name
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
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


def request_record(ctx: RequestContext, latency_s: float) -> dict[str, Any]:
    return {
        "request_id": ctx.request_id,
        "key_id": ctx.key_id,
        "method": ctx.method,
        "route": ctx.route,
        "status": ctx.status,
        "latency_ms": round(latency_s * 1000, 1),
        "prompt_tokens": ctx.prompt_tokens,
        "completion_tokens": ctx.completion_tokens,
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
        }
        line = json.dumps(record) + "\n"
        with self._lock, self._path.open("a", encoding="utf-8") as file:
            file.write(line)
