"""The Files API as clients use it: the openai Python SDK uploads a batch file, reads it back,
lists and deletes it; a bad line is refused naming its line (never quoting it) and leaves
nothing behind; another key's file is not found; uploads over --max-file-bytes are 413s."""

from __future__ import annotations

import json
import socket
import sqlite3
import time

import openai
import pytest

from tests.files.batch_files import SECRET, chat_line, jsonl, multipart
from tests.files.conftest import KEYS, MAX_FILE_BYTES, FilesServer
from tests.utils.errors import assert_openai_error


def stored_rows(server: FilesServer) -> tuple[int, int]:
    """Rows in the files and file_chunks tables (every state, every owner)."""
    with sqlite3.connect(server.state_dir / "lingshu.db") as db:
        files = db.execute("SELECT count(*) FROM files").fetchone()[0]
        chunks = db.execute("SELECT count(*) FROM file_chunks").fetchone()[0]
    return files, chunks


def test_the_python_sdk_uploads_reads_lists_and_deletes_a_batch_file(files_server, tmp_path):
    client = files_server.sdk()
    content = jsonl(chat_line("study-1"), chat_line("study-2", "Any effusion?"))
    path = tmp_path / "requests.jsonl"
    path.write_bytes(content)
    with path.open("rb") as f:
        created = client.files.create(file=f, purpose="batch")
    assert created.id.startswith("file-") and created.object == "file"
    assert (created.purpose, created.filename, created.bytes) == ("batch", path.name, len(content))
    assert created.status == "processed" and created.expires_at > time.time()
    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).content == content
    user_data = client.files.create(file=("notes.txt", b"kept as sent"), purpose="user_data")
    assert [f.id for f in client.files.list()] == [user_data.id, created.id]  # newest first
    assert [f.id for f in client.files.list(purpose="batch")] == [created.id]
    page = client.files.list(limit=1, order="asc")
    assert [f.id for f in page.data] == [created.id] and page.has_more
    assert [f.id for f in client.files.list(after=created.id, order="asc")] == [user_data.id]
    for file_id in (created.id, user_data.id):
        deleted = client.files.delete(file_id)
        assert (deleted.id, deleted.deleted) == (file_id, True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    assert stored_rows(files_server) == (0, 0)
    time.sleep(0.2)  # the audit line is written just after the answer
    audited = [
        (entry["action"], entry["id"])
        for line in files_server.audit_path.read_text().splitlines()
        for entry in json.loads(line).get("stored", [])
        if entry["id"] == created.id
    ]
    assert audited == [("create", created.id), ("read", created.id), ("read", created.id)] + [
        ("delete", created.id)
    ]
    logged = files_server.audit_path.read_text() + files_server.running.log_text()
    assert SECRET not in logged and "Any effusion?" not in logged


BAD_LINES = [
    # (the file's lines, the bad line's number, what the message says, its code)
    (["{not json"], 1, "not valid JSON", "invalid_json_line"),
    (["", '["a list"]'], 2, "not a JSON object", "invalid_json_line"),
    ([{**chat_line("a"), "custom_id": ""}], 1, "custom_id", None),
    ([chat_line("a"), chat_line("b"), chat_line("a")], 3, "custom_id", "duplicate_custom_id"),
    ([{**chat_line("a"), "method": "GET"}], 1, "method", None),
    ([{**chat_line("a"), "url": "/v1/embeddings"}], 1, "url", "invalid_url"),
    ([chat_line("a"), {**chat_line("b"), "url": "/v1/responses"}], 2, "url", "mismatched_url"),
    ([{**chat_line("a"), "body": "text"}], 1, "body", None),
    ([chat_line("a"), chat_line("b", stream=True)], 2, "stream", None),
    ([chat_line("a", max_tokens="16")], 1, "max_tokens", "invalid_type"),
    ([chat_line("a", messages=[])], 1, "messages", None),
]


def test_each_bad_line_is_refused_naming_its_line_never_its_content(alice, files_server):
    for lines, number, says, code in BAD_LINES:
        for purpose_first in (True, False):  # the Python SDK's order and the JS SDK's
            headers, body = multipart(jsonl(*lines), purpose_first=purpose_first)
            error = assert_openai_error(
                alice.post("/v1/files", headers=headers, content=body), 400, "file", code
            )
            assert error["message"].startswith(f"line {number}: "), error
            assert says in error["message"] and SECRET not in error["message"], error
    # the same lines are fine as user data: only batch files are checked
    headers, body = multipart(jsonl("{not json"), "user_data", purpose_first=False)
    kept = alice.post("/v1/files", headers=headers, content=body).json()
    assert alice.delete(f"/v1/files/{kept['id']}").status_code == 200
    assert stored_rows(files_server) == (0, 0)  # the refused uploads left nothing


def test_empty_files_missing_fields_and_other_purposes_are_400s(alice):
    for content, purpose, param, code in [
        (b"", "batch", "file", "empty_file"),
        (b"\n  \n", "batch", "file", "empty_file"),
        (b"", "user_data", "file", "empty_file"),
        (jsonl(chat_line("a")), None, "purpose", "missing_required_parameter"),
        (jsonl(chat_line("a")), "fine-tune", "purpose", "invalid_purpose"),
        (jsonl(chat_line("a")), "batch_output", "purpose", "invalid_purpose"),
    ]:
        headers, body = multipart(content, purpose)
        refused = alice.post("/v1/files", headers=headers, content=body)
        assert_openai_error(refused, 400, param, code)
    assert_openai_error(alice.post("/v1/files", data={"purpose": "batch"}), 415)
    assert_openai_error(alice.post("/v1/files", files={"purpose": (None, "batch")}), 400, "file")


def test_another_keys_file_is_not_found_exactly_as_a_missing_one(alice, bob):
    headers, body = multipart(jsonl(chat_line("a")))
    file_id = alice.post("/v1/files", headers=headers, content=body).json()["id"]
    for missing in (file_id, "file-000000000000000000000000"):
        for method, path in [
            ("GET", f"/v1/files/{missing}"),
            ("GET", f"/v1/files/{missing}/content"),
            ("DELETE", f"/v1/files/{missing}"),
        ]:
            error = assert_openai_error(bob.request(method, path), 404, "file_id")
            assert error["message"] == f"No such File object: {missing}"
    assert bob.get("/v1/files").json()["data"] == []
    assert alice.get(f"/v1/files/{file_id}").status_code == 200  # still there for its owner
    alice.delete(f"/v1/files/{file_id}")


def test_uploads_over_the_cap_are_413s_and_leave_nothing(alice, files_server):
    with socket.create_connection(("127.0.0.1", files_server.running.port), timeout=10) as raw:
        raw.sendall(  # a declared length over the cap: refused before a byte of the body
            f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEYS[0]}\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\n"
            f"Content-Length: {MAX_FILE_BYTES + 1}\r\n\r\n".encode()
        )
        assert raw.recv(65536).startswith(b"HTTP/1.1 413 ")
    headers, body = multipart(b"x" * MAX_FILE_BYTES, "user_data")

    def chunked():  # no Content-Length: the cap is found while the file streams in
        for start in range(0, len(body), 1 << 20):
            yield body[start : start + (1 << 20)]

    error = assert_openai_error(
        alice.post("/v1/files", headers=headers, content=chunked()), 413, code="request_too_large"
    )
    assert str(MAX_FILE_BYTES) in error["message"]
    assert stored_rows(files_server) == (0, 0)


def test_the_guides_example_runs_as_written(files_server, tmp_path, monkeypatch, capsys):
    from tests.utils.docs import fenced_blocks, on_server, page

    example = on_server(fenced_blocks("py", page("guides/files.md"))[0], files_server.running.port)
    monkeypatch.chdir(tmp_path)  # run here, not in a new interpreter: the SDK is loaded already
    exec(example.replace('api_key="unused"', f'api_key="{KEYS[0]}"'), {})
    assert capsys.readouterr().out == fenced_blocks("text", page("guides/files.md"))[0]
