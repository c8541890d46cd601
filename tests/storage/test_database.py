"""The storage layer on its own (SQLite in a temporary folder): the migrations make exactly the
tables the queries are written against, retention deletes what expired with the images (and
report drafts' SR files) nobody else holds, and a database migrated by a newer server is
refused."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from lingshu_server.storage.conversation_store import Conversation, ConversationStore
from lingshu_server.storage.database import Database
from lingshu_server.storage.migrate import SchemaTooNewError, head_revision
from lingshu_server.storage.report_draft_store import ReportDraftStore, StoredDraft
from lingshu_server.storage.response_store import ResponseStore, StoredResponse
from lingshu_server.storage.sweeper import sweep
from lingshu_server.storage.tables import metadata


def run(coro):
    return asyncio.run(coro)


def test_the_migrations_make_the_tables_the_code_queries(tmp_path: Path):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    async def migrate() -> None:
        database = Database.from_settings(None, tmp_path)
        await database.open()
        await database.close()

    run(migrate())
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'lingshu.db'}")
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
        version = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    assert differences == []
    assert version == head_revision()


def record(response_id: str, image: bytes | None) -> tuple[StoredResponse, dict[str, bytes]]:
    import hashlib

    contents = {hashlib.sha256(image).hexdigest(): image} if image else {}
    items = [{"id": "msg_1", "type": "message", "role": "user", "content": []}]
    stored = StoredResponse(
        id=response_id,
        owner="key:a",
        created_at=time.time(),
        previous_response_id=None,
        conversation_id=None,
        input_items=items,
        body={"id": response_id, "output": []},
    )
    return stored, contents


def test_retention_deletes_what_expired_and_the_images_only_it_held(tmp_path: Path):
    async def scenario() -> int:
        database = Database.from_settings(None, tmp_path)
        short, long = ResponseStore(database, ttl_s=60), ResponseStore(database, ttl_s=3600)
        await short.save(*record("resp_old", b"old image"))
        await short.save(*record("resp_shared_old", b"shared image"))
        await long.save(*record("resp_new", b"shared image"))
        conversations = ConversationStore(database, ttl_s=60)
        await conversations.create(Conversation("conv_old", "key:a", time.time(), {}), [], {})
        gone = await sweep(database, now=time.time() + 120)
        assert await long.get("key:a", "resp_new") is not None
        assert await short.get("key:a", "resp_old") is None
        assert await conversations.get("key:a", "conv_old") is None
        await database.close()
        return gone

    gone = run(scenario())
    assert gone == 3
    with sqlite3.connect(tmp_path / "lingshu.db") as db:
        assert db.execute("SELECT count(*) FROM blobs").fetchone() == (1,)  # the shared one
        assert db.execute("SELECT count(*) FROM responses").fetchone() == (1,)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_report_drafts_are_their_owners_and_expire_with_their_sr_files(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
):
    url = (
        request.getfixturevalue("postgres").create_database("report_drafts")
        if backend == "postgresql"
        else None
    )

    def draft(draft_id: str, sr: bytes) -> StoredDraft:
        report = {"id": draft_id, "dicom_sr": {"data": ""}}
        return StoredDraft(draft_id, "key:a", report, sr, "http://pacs/dicom-web/studies/1")

    async def scenario() -> tuple[int, list[str]]:
        database = Database.from_settings(url, tmp_path)
        short, long = ReportDraftStore(database, ttl_s=60), ReportDraftStore(database, 3600)
        await short.save(draft("d-old", b"old SR"), "1" * 64)
        await long.save(draft("d-new", b"new SR"), "2" * 64)
        assert await short.get("key:b", "d-old") is None  # another owner's: not found
        assert (await short.get("key:a", "d-old")).sr == b"old SR"
        gone = await sweep(database, now=time.time() + 120)
        assert await short.get("key:a", "d-old") is None
        kept = await long.get("key:a", "d-new")
        assert kept is not None and kept.target_url == "http://pacs/dicom-web/studies/1"
        async with database.transaction() as connection:
            left = list((await connection.execute(sa.text("SELECT sha256 FROM blobs"))).scalars())
        await database.close()
        return gone, left

    assert run(scenario()) == (1, ["2" * 64])  # the expired draft's SR file went with it


def test_an_expired_object_is_not_found_before_the_sweeper_runs(tmp_path: Path):
    async def scenario() -> None:
        database = Database.from_settings(None, tmp_path)
        store = ResponseStore(database, ttl_s=0.05)
        await store.save(*record("resp_brief", None))
        assert await store.get("key:a", "resp_brief") is not None
        await asyncio.sleep(0.1)
        assert await store.get("key:a", "resp_brief") is None
        await database.close()

    run(scenario())


def test_a_database_migrated_by_a_newer_server_is_refused(tmp_path: Path):
    async def scenario() -> None:
        database = Database.from_settings(None, tmp_path)
        await database.open()
        await database.close()
        with sqlite3.connect(tmp_path / "lingshu.db") as db:
            db.execute("UPDATE alembic_version SET version_num = '9999'")
        newer = Database.from_settings(None, tmp_path)
        with pytest.raises(SchemaTooNewError, match="revision 9999.*newer lingshu-server"):
            await newer.open()
        assert not newer.opened

    run(scenario())


def test_the_state_folder_is_private(tmp_path: Path):
    async def scenario() -> None:
        database = Database.from_settings(None, tmp_path / "state")
        await database.open()
        await database.close()

    run(scenario())
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert Database.from_settings(
        "postgresql+asyncpg://u:secret@db:5432/x", tmp_path
    ).described == ("postgresql:db:5432")
