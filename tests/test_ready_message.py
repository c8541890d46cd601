"""The one message said when the server is ready: where it listens, the playground and docs
pages when they are served, and a curl to try that names the key header, never a key."""

from __future__ import annotations

import json
import logging
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lingshu_server.app import create_app
from lingshu_server.core.logs import JsonFormatter, TextFormatter
from lingshu_server.core.settings import Settings
from lingshu_server.demo_model import ensure_demo_model
from lingshu_server.http.ready_message import ready_message
from tests.utils.fake_engine import placeholder_ids

SECRET = "sk-ready-message-secret"


def message(**overrides: Any):
    values = {
        "host": "127.0.0.1",
        "port": 8000,
        "model": "lingshu-demo",
        "playground": True,
        "docs": True,
        "api_keys": False,
    }
    return ready_message(**{**values, **overrides})


def curl_words(curl: str) -> list[str]:
    return shlex.split(curl.replace("$KEY", "KEY"))


def test_says_where_it_listens_with_playground_docs_and_a_curl():
    ready = message(port=8765)
    assert ready.fields["url"] == "http://127.0.0.1:8765"
    assert ready.fields["playground_url"] == "http://127.0.0.1:8765/playground"
    assert ready.fields["docs_url"] == "http://127.0.0.1:8765/docs"
    words = curl_words(ready.fields["try"])
    assert words[:2] == ["curl", "http://127.0.0.1:8765/v1/chat/completions"]
    body = json.loads(words[words.index("-d") + 1])
    assert body["model"] == "lingshu-demo" and body["messages"][0]["role"] == "user"
    assert "Authorization: Bearer KEY" not in words
    assert ready.text_lines[0] == "ready: lingshu-demo on http://127.0.0.1:8765"
    text = "\n".join(ready.text_lines)
    for url in ("/playground", "/docs", ready.fields["try"]):
        assert url in text


def test_playground_and_docs_only_when_served():
    ready = message(playground=False, docs=False)
    assert "playground_url" not in ready.fields and "docs_url" not in ready.fields
    text = "\n".join(ready.text_lines)
    assert "/playground" not in text and "/docs" not in text
    assert ready.fields["try"] in text


def test_with_keys_the_curl_sends_the_header_not_a_key():
    ready = message(api_keys=True)
    words = curl_words(ready.fields["try"])
    assert words[words.index("Authorization: Bearer KEY") - 1] == "-H"
    assert '-H "Authorization: Bearer $KEY"' in ready.fields["try"]


@pytest.mark.parametrize(
    ("host", "listening", "local"),
    [
        ("0.0.0.0", "http://0.0.0.0:9000", "http://127.0.0.1:9000"),
        ("::", "http://[::]:9000", "http://[::1]:9000"),
        ("10.1.2.3", "http://10.1.2.3:9000", "http://10.1.2.3:9000"),
        ("localhost", "http://localhost:9000", "http://localhost:9000"),
    ],
)
def test_every_address_listening_is_tried_on_loopback(host, listening, local):
    ready = message(host=host, port=9000)
    assert ready.fields["url"] == listening
    assert ready.fields["playground_url"] == f"{local}/playground"
    assert curl_words(ready.fields["try"])[1] == f"{local}/v1/chat/completions"


def test_a_model_name_with_a_quote_stays_one_shell_word():
    words = curl_words(message(model="it's").fields["try"])
    assert json.loads(words[words.index("-d") + 1])["model"] == "it's"


# Through the app: the stand-in engine stops at the engine boundary; everything the ready
# message reads (settings, docs decision, key store) is the real app's.


@dataclass
class IdleEngine:
    tokenizer: Any
    max_model_len: int = 8192
    max_tokens_per_visual_item: int = 16384
    configuration: dict[str, Any] = field(default_factory=lambda: {"engine": "idle"})
    sampling_defaults: dict[str, float] = field(default_factory=dict)
    shut_down: list[bool] = field(default_factory=list)

    @property
    def placeholder_ids(self) -> dict[str, int]:
        return placeholder_ids(self.tokenizer)

    async def is_healthy(self) -> bool:
        return True

    def shutdown(self) -> None:
        self.shut_down.append(True)


@pytest.fixture(scope="module")
def demo_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ensure_demo_model()))


def ready_record(settings: Settings, tokenizer: Any, caplog) -> logging.LogRecord:
    engine = IdleEngine(tokenizer)
    app = create_app(settings, engine_factory=lambda *_settings_budget_lora: engine)
    caplog.set_level(logging.INFO, logger="lingshu_server.app")
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline, client.get("/health").json()
            time.sleep(0.05)
    (found,) = [r for r in caplog.records if r.name == "lingshu_server.app" and r.msg == "ready"]
    return found


@pytest.mark.parametrize("keys", [False, True])
def test_the_app_says_it_once_when_ready(keys, demo_tokenizer, caplog, monkeypatch):
    for name in ("LINGSHU_PLAYGROUND", "LINGSHU_DOCS", "LINGSHU_API_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(
        model=str(ensure_demo_model()),
        served_model_name=["lingshu-demo"],
        port=8123,
        api_keys=SECRET if keys else None,
    )
    found = ready_record(settings, demo_tokenizer, caplog)
    entry = json.loads(JsonFormatter().format(found))
    assert entry["message"] == "ready" and entry["max_model_len"] == 8192
    assert entry["url"] == "http://127.0.0.1:8123"
    assert entry["playground_url"] == "http://127.0.0.1:8123/playground"
    assert entry["docs_url"] == "http://127.0.0.1:8123/docs"  # docs are on by loopback
    assert ('-H "Authorization: Bearer $KEY"' in entry["try"]) is keys
    assert '"model": "lingshu-demo"' in entry["try"]
    assert entry["input_modalities"] == ["text", "image", "video"]
    assert entry["system_fingerprint"].startswith("fp_")
    text = TextFormatter().format(found)
    assert "ready: lingshu-demo on http://127.0.0.1:8123" in text.splitlines()[0]
    assert "    takes       text, image, video" in text.splitlines()
    assert f"fingerprint {entry['system_fingerprint']}" in text
    assert SECRET not in text and SECRET not in json.dumps(entry)


def test_the_app_leaves_out_what_it_does_not_serve(demo_tokenizer, caplog):
    settings = Settings(
        model=str(ensure_demo_model()),
        served_model_name=["lingshu-demo"],
        host="0.0.0.0",
        port=8124,
        allow_unauthenticated=True,
        playground=False,
    )
    entry = json.loads(JsonFormatter().format(ready_record(settings, demo_tokenizer, caplog)))
    assert entry["url"] == "http://0.0.0.0:8124"
    assert "playground_url" not in entry
    assert "docs_url" not in entry  # not on loopback: no docs by default
