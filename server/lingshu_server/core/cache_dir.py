"""Where the server keeps what it builds or computes once and reuses: the demo checkpoint and
checkpoint fingerprints (when the checkpoint's own folder is read-only)."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the cache root (default ``~/.cache/lingshu-server``).
CACHE_DIR_ENV = "LINGSHU_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$LINGSHU_CACHE_DIR`` if set, else ``~/.cache/lingshu-server``."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "lingshu-server"
