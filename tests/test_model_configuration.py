"""What the server says about the model it serves, found at start-up: `system_fingerprint` (the
configuration an answer came from: the same in every API and in /v1/models, logged, derived
from the checkpoint's files hashed once) and the input kinds its chat template can express
(a request with a kind it cannot is a 400 before the engine sees it)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lingshu_server.engine import checkpoint_digest
from tests.conftest import FILE_KEYS
from tests.utils.chat import CHAT, chat, stream_events, user
from tests.utils.checkpoints import checkpoint_without_video
from tests.utils.errors import assert_openai_error
from tests.utils.images import image_data_url, image_part
from tests.utils.videos import clip_url, video_part

FINGERPRINT = re.compile(r"^fp_[0-9a-f]{16}$")


def card(client: httpx.Client, **headers: str) -> dict:
    response = client.get("/v1/models", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"][0]


def log_entries(server, message: str) -> list[dict]:
    return [
        entry
        for line in server.log_text().splitlines()
        if line.startswith("{") and (entry := json.loads(line))["message"] == message
    ]


def test_every_api_answers_with_the_fingerprint_models_shows(client, server):
    fingerprint = card(client)["system_fingerprint"]
    assert FINGERPRINT.match(fingerprint)
    assert chat(client, [user("Findings?")], max_tokens=2)["system_fingerprint"] == fingerprint
    chunks = stream_events(client, [user("Findings?")], max_tokens=2)[:-1]
    assert {chunk["system_fingerprint"] for chunk in chunks} == {fingerprint}
    completion = client.post("/v1/completions", json={"prompt": "Findings:", "max_tokens": 2})
    assert completion.json()["system_fingerprint"] == fingerprint
    response = client.post("/v1/responses", json={"input": "Findings?", "max_output_tokens": 2})
    assert response.json()["system_fingerprint"] == fingerprint
    # (in-process servers share the test process's log: pick this configuration's line)
    (logged, *_) = [
        entry
        for entry in log_entries(server, "model configuration")
        if entry["system_fingerprint"] == fingerprint
    ]
    assert logged["input_modalities"] == ["text", "image", "video"]
    assert logged["server"] and logged["engine"] and logged["inputs"]["max_pixels"]
    assert re.fullmatch(r"[0-9a-f]{64}", logged["checkpoint_sha256"])


def test_the_fingerprint_names_the_configuration_not_the_front_end(client, secured):
    """Another front end of the same checkpoint and engine (keys, limits, audit): the same."""
    with httpx.Client(base_url=secured.base_url) as keyed:
        other = card(keyed, authorization=f"Bearer {FILE_KEYS[39]}")
    assert other["system_fingerprint"] == card(client)["system_fingerprint"]


def test_the_checkpoint_is_hashed_once_and_the_hashes_kept_beside_it(tmp_path, monkeypatch):
    """A 16 GB checkpoint is read once: later starts compare sizes and modification times."""
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    (folder / "model.safetensors").write_bytes(b"weights" * 1000)
    (folder / "README.md").write_text("a model card edit changes no answer")
    cache = tmp_path / "cache"
    hashed: list[str] = []
    real_sha256 = checkpoint_digest._sha256
    monkeypatch.setattr(
        checkpoint_digest, "_sha256", lambda file: hashed.append(file.name) or real_sha256(file)
    )
    first = checkpoint_digest.checkpoint_digest(str(folder), cache)
    assert sorted(hashed) == ["config.json", "model.safetensors"]
    assert (folder / checkpoint_digest.CACHE_NAME).is_file()
    (folder / "README.md").write_text("edited")
    assert checkpoint_digest.checkpoint_digest(str(folder), cache) == first
    assert len(hashed) == 2  # nothing read again
    (folder / "config.json").write_text('{"model_type": "qwen2_5_vl", "changed": 1}')
    assert checkpoint_digest.checkpoint_digest(str(folder), cache) != first
    assert hashed[2:] == ["config.json"]


def test_a_read_only_checkpoint_keeps_its_hashes_in_the_cache_folder(tmp_path, monkeypatch):
    folder = tmp_path / "read-only"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"w")
    real_mkstemp = checkpoint_digest.tempfile.mkstemp

    def mkstemp(prefix: str, dir: Path):  # noqa: A002 - tempfile's own name
        if Path(dir) == folder:
            raise PermissionError("read-only file system")
        return real_mkstemp(prefix=prefix, dir=dir)

    monkeypatch.setattr(checkpoint_digest.tempfile, "mkstemp", mkstemp)
    cache = tmp_path / "cache"
    digest = checkpoint_digest.checkpoint_digest(str(folder), cache)
    (kept,) = (cache / "checkpoint-digests").iterdir()  # keyed by the checkpoint's path
    assert "model.safetensors" in json.loads(kept.read_text())["files"]
    assert checkpoint_digest.checkpoint_digest(str(folder), cache) == digest


@pytest.fixture(scope="module")
def no_video_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from tests.utils.in_process import start_fake_checkpoint_server

    root = tmp_path_factory.mktemp("no-video")
    model = checkpoint_without_video(root / "checkpoint")
    running = start_fake_checkpoint_server(root / "server.log", model, "--dtype", "float32")
    yield running
    running.stop()


def test_a_template_that_cannot_express_video_is_found_at_start_up(no_video_server, client):
    assert card(client)["input_modalities"] == ["text", "image", "video"]
    with httpx.Client(base_url=no_video_server.base_url, timeout=60) as other:
        model = card(other)
        assert model["input_modalities"] == ["text", "image"]
        said = [entry["input_modalities"] for entry in log_entries(no_video_server, "ready")]
        assert ["text", "image"] in said
        # another chat template: other checkpoint files, another configuration
        assert model["system_fingerprint"] != card(client)["system_fingerprint"]
        seen = len(no_video_server.engine.requests)
        refused = other.post(
            CHAT, json={"messages": [user(video_part(clip_url(64, 64, 4)), "What moves?")]}
        )
        error = assert_openai_error(
            refused, 400, param="messages[0].content[0].video_url", code="unsupported_input"
        )
        assert "no video placeholder" in error["message"]
        assert len(no_video_server.engine.requests) == seen  # the engine never saw it
        image = [user(image_part(image_data_url(56, 56)), "Findings?")]
        assert chat(other, image, max_tokens=2)["choices"][0]["message"]["content"]
