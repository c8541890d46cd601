"""/v1/models, /health and /version on the real server."""

from __future__ import annotations


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
