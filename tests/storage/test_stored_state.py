"""Stored responses and conversations at the HTTP edge, on the fake engine: stored by default
when the server says so, each object its creator's (another key gets the same 404 as for an id
that never existed), OpenAI's cursor pages, images held once and deleted with their last
reference, audit records of ids and hashes only, and nothing of the content in the logs."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from tests.storage.conftest import StoringServer
from tests.utils.errors import assert_openai_error
from tests.utils.images import image_data_url

IMAGE = image_data_url(64, 64, seed=11)
SECRET = "Patient Erika Mustermann, MRN 4471-2290"


def ask(client, text: str = "Findings?", **fields) -> dict:
    body = {"input": text, "max_output_tokens": 2, **fields}
    response = client.post("/v1/responses", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def with_image(text: str, image: str = IMAGE) -> list[dict]:
    parts = [{"type": "input_image", "image_url": image}, {"type": "input_text", "text": text}]
    return [{"role": "user", "content": parts}]


def stored_blobs(storing: StoringServer) -> set[str]:
    with sqlite3.connect(storing.state_dir / "lingshu.db") as db:
        return {row[0] for row in db.execute("SELECT sha256 FROM blobs")}


def test_the_server_setting_stores_by_default_and_a_request_may_decline(alice, storing):
    kept = ask(alice)
    assert kept["store"] is True
    assert alice.get(f"/v1/responses/{kept['id']}").json() == kept
    declined = ask(alice, store=False)
    assert declined["store"] is False
    assert_openai_error(alice.get(f"/v1/responses/{declined['id']}"), 404, code="not_found")
    assert "storing     responses by default, in sqlite:" in storing.running.log_text() or (
        '"stored_responses": "sqlite:' in storing.running.log_text()
    )


def test_another_key_finds_nothing_and_cannot_tell_it_exists(alice, bob):
    mine = ask(alice, SECRET)
    conversation = alice.post("/v1/conversations", json={}).json()
    never = "resp_00000000000000000000000000000000"
    for path in (f"/v1/responses/{mine['id']}", f"/v1/responses/{mine['id']}/input_items"):
        theirs = assert_openai_error(bob.get(path), 404, code="not_found")
        missing = assert_openai_error(bob.get(path.replace(mine["id"], never)), 404)
        assert theirs["message"].replace(mine["id"], never) == missing["message"]
    assert_openai_error(bob.delete(f"/v1/responses/{mine['id']}"), 404)
    follow = bob.post("/v1/responses", json={"input": "x", "previous_response_id": mine["id"]})
    assert_openai_error(follow, 400, code="previous_response_not_found")
    for call in (
        bob.get(f"/v1/conversations/{conversation['id']}"),
        bob.get(f"/v1/conversations/{conversation['id']}/items"),
        bob.post(f"/v1/conversations/{conversation['id']}", json={"metadata": {}}),
        bob.delete(f"/v1/conversations/{conversation['id']}"),
        bob.post("/v1/responses", json={"input": "x", "conversation": conversation["id"]}),
    ):
        assert_openai_error(call, 404, code="not_found")
    assert alice.get(f"/v1/responses/{mine['id']}").status_code == 200  # still there
    assert alice.get(f"/v1/conversations/{conversation['id']}").status_code == 200


def test_input_items_come_in_cursor_pages(alice):
    items = [{"role": "user", "content": f"part {i}"} for i in range(5)]
    created = ask(alice, items)
    url = f"/v1/responses/{created['id']}/input_items"
    everything = alice.get(url, params={"order": "asc"}).json()
    assert everything["object"] == "list" and everything["has_more"] is False
    texts = [item["content"][0]["text"] for item in everything["data"]]
    assert texts == [f"part {i}" for i in range(5)]
    assert all(
        item["id"].startswith("msg_") and item["status"] == "completed"
        for item in everything["data"]
    )
    seen, after = [], None
    while True:
        page = alice.get(url, params={"limit": 2, **({"after": after} if after else {})}).json()
        seen += [item["content"][0]["text"] for item in page["data"]]
        assert (
            page["first_id"] == page["data"][0]["id"] and page["last_id"] == page["data"][-1]["id"]
        )
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == [f"part {i}" for i in reversed(range(5))]  # newest first by default
    assert_openai_error(alice.get(url, params={"limit": 0}), 400, param="limit")
    assert_openai_error(alice.get(url, params={"order": "sideways"}), 400, param="order")


def test_conversation_items_pages_and_edits(alice):
    created = alice.post(
        "/v1/conversations",
        json={"items": [{"role": "user", "content": "first"}], "metadata": {"ward": "icu"}},
    ).json()
    assert created["object"] == "conversation" and created["metadata"] == {"ward": "icu"}
    url = f"/v1/conversations/{created['id']}/items"
    added = alice.post(
        url, json={"items": [{"role": "user", "content": f"n{i}"} for i in range(3)]}
    )
    assert [item["content"][0]["text"] for item in added.json()["data"]] == ["n0", "n1", "n2"]
    page = alice.get(url, params={"limit": 2, "order": "asc"}).json()
    assert [item["content"][0]["text"] for item in page["data"]] == ["first", "n0"]
    assert page["has_more"] is True
    rest = alice.get(url, params={"after": page["last_id"], "order": "asc"}).json()
    assert [item["content"][0]["text"] for item in rest["data"]] == ["n1", "n2"]
    gone = alice.delete(f"{url}/{rest['data'][0]['id']}")
    assert gone.json()["id"] == created["id"]
    assert_openai_error(alice.get(f"{url}/{rest['data'][0]['id']}"), 404, param="item_id")
    newest = alice.get(url).json()["data"]
    assert [item["content"][0]["text"] for item in newest] == ["n2", "n0", "first"]
    updated = alice.post(f"/v1/conversations/{created['id']}", json={"metadata": {"ward": "er"}})
    assert updated.json()["metadata"] == {"ward": "er"}
    too_many = {"metadata": {f"k{i}": "v" for i in range(17)}}
    assert_openai_error(alice.post("/v1/conversations", json=too_many), 400, param="metadata")
    assert_openai_error(alice.post(url, json={"items": []}), 400, param="items")
    deleted = alice.delete(f"/v1/conversations/{created['id']}").json()
    assert deleted == {"id": created["id"], "object": "conversation.deleted", "deleted": True}
    assert_openai_error(alice.get(url), 404)


def test_an_image_is_stored_once_and_deleted_with_its_last_reference(alice, storing):
    image = image_data_url(48, 48, seed=23)
    first = ask(alice, with_image("a", image))
    second = ask(alice, with_image("b", image))
    conversation = alice.post("/v1/conversations", json={"items": with_image("c", image)}).json()
    (created,) = [
        entry
        for record in audit_records(storing, first["id"])
        for entry in record["stored"]
        if entry["id"] == first["id"] and entry["action"] == "create"
    ]
    (digest,) = created["sha256"]
    assert digest in stored_blobs(storing)
    alice.delete(f"/v1/responses/{first['id']}")
    alice.delete(f"/v1/responses/{second['id']}")
    assert digest in stored_blobs(storing)  # the conversation still holds it
    items = alice.get(f"/v1/conversations/{conversation['id']}/items").json()["data"]
    assert items[0]["content"][0]["image_url"] == image
    alice.delete(f"/v1/conversations/{conversation['id']}")
    assert digest not in stored_blobs(storing)


def audit_records(storing: StoringServer, object_id: str) -> list[dict]:
    lines = storing.audit_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [r for r in records if any(s["id"] == object_id for s in r.get("stored", []))]


def test_audit_records_name_ids_and_hashes_and_nothing_leaks_to_the_logs(alice, storing):
    first = ask(alice, with_image(SECRET))
    follow = ask(alice, "And the heart?", previous_response_id=first["id"])
    alice.get(f"/v1/responses/{first['id']}/input_items")
    alice.delete(f"/v1/responses/{first['id']}")
    time.sleep(0.2)
    actions = [
        (s["action"], s["id"])
        for record in audit_records(storing, first["id"])
        for s in record["stored"]
        if s["id"] == first["id"]
    ]
    assert actions == [
        ("create", first["id"]),
        ("read", first["id"]),  # the follow-up replayed it
        ("read", first["id"]),
        ("delete", first["id"]),
    ]
    created = audit_records(storing, first["id"])[0]["stored"][0]
    assert len(created["sha256"]) == 1 and len(created["sha256"][0]) == 64
    assert follow["id"] in json.dumps(audit_records(storing, follow["id"]))
    logged = storing.running.log_text() + storing.audit_path.read_text()
    assert SECRET not in logged and "And the heart?" not in logged
    assert IMAGE.split(",")[1][:40] not in logged


@pytest.mark.parametrize(
    "body", [{"input": "x", "store": "yes"}, {"input": "x", "conversation": 7}]
)
def test_bad_history_fields_are_400s(alice, body):
    param = "store" if "store" in body else "conversation"
    assert_openai_error(alice.post("/v1/responses", json=body), 400, param=param)
