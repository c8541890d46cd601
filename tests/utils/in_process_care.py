"""What tests sharing a process with the in-process servers (tests/utils/in_process.py) must
take care of: the fake engine is instant unless slowed, and `lingshu_server.cli.main` configures
logging for a whole process (one handler on the root logger, where those servers log)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from tests.utils.in_process import InProcessServer
from tests.utils.server import RunningServer


@contextmanager
def slow_steps(server: RunningServer | InProcessServer, seconds: float) -> Iterator[None]:
    """On the fake engine each token takes `seconds`, so a request stays in flight long enough
    to watch (the real engine on CPU is slow enough by itself)."""
    if not isinstance(server, InProcessServer):
        yield
        return
    server.engine.step_delay_s = seconds
    try:
        yield
    finally:
        server.engine.step_delay_s = 0.0


@contextmanager
def process_logging_kept() -> Iterator[None]:
    """Put back this process's logging after code that configures it (`cli.main`)."""
    root = logging.getLogger()
    names = ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx")
    loggers = [logging.getLogger(name) for name in names]
    saved_root = (root.handlers[:], root.level)
    saved = [(lg.handlers[:], lg.propagate, lg.disabled, lg.level) for lg in loggers]
    env = os.environ.get("VLLM_LOGGING_CONFIG_PATH")
    try:
        yield
    finally:
        root.handlers[:], root.level = saved_root
        for logger, (handlers, propagate, disabled, level) in zip(loggers, saved, strict=True):
            logger.handlers[:], logger.propagate, logger.disabled = handlers, propagate, disabled
            logger.setLevel(level)
        if env is None:
            os.environ.pop("VLLM_LOGGING_CONFIG_PATH", None)
        else:
            os.environ["VLLM_LOGGING_CONFIG_PATH"] = env
