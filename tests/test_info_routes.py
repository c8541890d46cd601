"""/v1/models, /health and /version; the loading stages of a real engine start are `e2e`."""

from __future__ import annotations

import json

import pytest


def test_models_list_shape(client):
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    (card,) = body["data"]
    assert card["id"] == "lingshu-demo"
    assert card["object"] == "model"
    assert card["max_model_len"] == 8192
    assert isinstance(card["created"], int)


def test_health_ok_while_engine_alive(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["stage"] == "ready"
    ready = client.get("/ready")
    assert ready.status_code == 200


def test_version(client):
    body = client.get("/version").json()
    from lingshu_server import __version__

    assert body["version"] == __version__
    assert body["vllm_version"] == "0.32.0"


@pytest.mark.e2e
def test_health_reports_loading_stages_while_the_model_loads(server):
    """Seen by the first front end of the shared engine, which started while the engine
    loaded (the log's first stages are that start's)."""
    statuses = server.shared.first_frontend.startup_statuses
    assert {"status": "loading_engine", "stage": "loading_engine"} in statuses
    assert statuses[-1] == {"status": "ok", "stage": "ready"}
    stages = [
        json.loads(line)
        for line in server.log_text().splitlines()
        if line.startswith("{")
        and '"lingshu_server.core.lifecycle"' in line
        and '"stage": ' in line  # start-up stages (the log is shared with a drain)
    ]
    seen = [entry["stage"] for entry in stages]
    assert seen[:4] == ["checking_model", "loading_engine", "preparing_chat_template", "ready"]
    assert all(isinstance(entry["elapsed_s"], float) for entry in stages)
    loading = next(entry for entry in stages if entry["stage"] == "preparing_chat_template")
    assert loading["previous"] == "loading_engine" and loading["previous_s"] > 1
