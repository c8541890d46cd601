"""The checkpoint's weights hash (a report's Device and SR equipment name it) is computed while
the server starts, not on the first report, and kept on disk: a restart reads no weights."""

from __future__ import annotations

import shutil

import httpx

from lingshu_server.demo_model import ensure_demo_model
from lingshu_server.engine import checkpoint_digest
from tests.utils.images import image_data_url
from tests.utils.in_process import start_fake_checkpoint_server


def test_weights_are_hashed_at_start_up_and_not_again_after_a_restart(tmp_path, monkeypatch):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(ensure_demo_model(), checkpoint, ignore=shutil.ignore_patterns(".*"))
    hashed: list[str] = []
    real_sha256 = checkpoint_digest._sha256
    monkeypatch.setattr(
        checkpoint_digest, "_sha256", lambda file: hashed.append(file.name) or real_sha256(file)
    )

    first = start_fake_checkpoint_server(tmp_path / "first.log", checkpoint, "--dtype", "float32")
    first.stop()
    assert "model.safetensors" in hashed and "config.json" in hashed  # before any report
    assert (checkpoint / checkpoint_digest.CACHE_NAME).is_file()  # beside the checkpoint

    hashed.clear()
    second = start_fake_checkpoint_server(tmp_path / "second.log", checkpoint, "--dtype", "float32")
    try:
        body = {"content": [{"type": "image_url", "image_url": {"url": image_data_url(32, 32)}}]}
        report = httpx.post(f"{second.base_url}/v1/reports", json=body, timeout=60).json()
    finally:
        second.stop()
    assert hashed == []  # the restart read no weights, nor did the report
    (device,) = [e["resource"] for e in report["fhir"]["entry"] if e["request"]["url"] == "Device"]
    weights = device["version"][0]["value"]
    assert weights == checkpoint_digest.checkpoint_digest(str(checkpoint), tmp_path / "cache")
