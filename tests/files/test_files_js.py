"""The official OpenAI JavaScript SDK (tests/js, npm `openai`) uploads a batch file from disk,
reads it back, lists and deletes it, and gets a bad line as a BadRequestError naming the line:
the JS SDK sends `file` before `purpose`, so the line check waits for the purpose. Files need
no engine: the in-process server on the fake engine answers."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.files.batch_files import chat_line, jsonl
from tests.files.conftest import KEYS
from tests.utils.tools import require_node

JS = Path(__file__).resolve().parents[1] / "js"


def test_the_js_sdk_uploads_reads_lists_and_deletes_a_batch_file(files_server, tmp_path):
    executable = require_node(JS, "openai")
    batch, bad = tmp_path / "batch.jsonl", tmp_path / "bad.jsonl"
    batch.write_bytes(jsonl(chat_line("study-1"), chat_line("study-2")))
    bad.write_bytes(jsonl(chat_line("study-1"), {**chat_line("study-2"), "method": "GET"}))
    env = {
        **os.environ,
        "LINGSHU_URL": files_server.running.base_url,
        "LINGSHU_KEY": KEYS[1],  # the other tests' files are the first key's
        "LINGSHU_BATCH_FILE": str(batch),
        "LINGSHU_BAD_FILE": str(bad),
    }
    result = subprocess.run(
        [executable, str(JS / "files.mjs")], capture_output=True, text=True, env=env, timeout=60
    )
    try:
        report = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"no report from the script:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    failed = [r["error"] for r in report["results"] if not r["ok"]]
    assert not failed, "\n\n".join(failed)
    assert result.returncode == 0, result.stderr
