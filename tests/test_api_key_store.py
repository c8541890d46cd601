"""The API key store in isolation: rotation is picked up, and the key file is looked at no
more than once a second however many requests arrive."""

from __future__ import annotations

import os
import time

from lingshu_server.http import auth
from lingshu_server.http.auth import ApiKeyStore, key_id


def test_key_file_is_checked_at_most_once_per_interval(tmp_path, monkeypatch):
    key_file = tmp_path / "keys"
    key_file.write_text("sk-one\n")
    calls = []
    real_stat = os.stat

    def counting_stat(path, *args, **kwargs):
        if str(path) == str(key_file):
            calls.append(time.monotonic())
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(auth.os, "stat", counting_stat)
    store = ApiKeyStore(None, key_file, check_interval=0.2)
    calls.clear()
    for _ in range(1000):
        assert store.match("sk-one") == key_id("sk-one")
    assert len(calls) <= 1

    key_file.write_text("sk-two\n")
    time.sleep(0.25)
    assert store.match("sk-two") == key_id("sk-two")
    assert store.match("sk-one") is None
