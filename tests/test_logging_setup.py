"""configure_logging: the temporary vLLM logging config it writes leaks no descriptor and is
gone when the server process ends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import os
from lingshu_server.core.logs import configure_logging
os.environ.pop("VLLM_LOGGING_CONFIG_PATH", None)
configure_logging("info", "json")
path = os.environ["VLLM_LOGGING_CONFIG_PATH"]
open_files = []
for fd in os.listdir("/proc/self/fd"):
    try:
        open_files.append(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:  # the descriptor listdir itself used
        pass
print(path)
print(os.path.exists(path), path in open_files)
"""


def test_vllm_logging_config_is_closed_and_removed_at_exit():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    path, state = result.stdout.split("\n")[:2]
    assert state == "True False"  # written, and no descriptor left open on it
    assert not Path(path).exists()  # removed when the process ended
