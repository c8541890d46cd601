"""How the reliability server is configured (the demo model serves a context of 8192 tokens),
and which mode the suite runs in."""

import os

import pytest

KEY = "sk-reliability-3d9f1c"
CONTEXT_TOKENS = 8192
MAX_TOKENS_CAP = 64
MAX_CONNECTIONS = 40
BODY_READ_TIMEOUT_S = 2.0
HEADER_TIMEOUT_S = 3.0
MAX_HEADER_BYTES = 16 * 1024
IMAGE_FETCH_TIMEOUT_S = 2.0
MAX_REQUEST_BYTES = 128 * 1024 * 1024  # the server's default
MAX_IMAGES = 4  # the server's default


def long_mode(config: pytest.Config) -> bool:
    """--reliability-long or LINGSHU_RELIABILITY_LONG=1: the issue's full sizes and durations."""
    return bool(config.getoption("--reliability-long", default=False)) or (
        os.environ.get("LINGSHU_RELIABILITY_LONG") == "1"
    )
