"""The tables of stored state. The schema is made by the migrations (storage/migrations); these
definitions are what the queries are written against, and a test checks the two agree.

Times are seconds since the epoch (floats): the same on SQLite and PostgreSQL. Content that may
be large (images sent in a conversation) lives once in `blobs`, by its SHA-256, and the objects
that use it are listed in `blob_refs`; a blob goes when its last reference does.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

blob_refs = sa.Table(
    "blob_refs",
    metadata,
    sa.Column("object_id", sa.String(80), primary_key=True),
    sa.Column("sha256", sa.String(64), sa.ForeignKey("blobs.sha256"), primary_key=True),
    sa.Index("ix_blob_refs_sha256", "sha256"),
)

responses = sa.Table(
    "responses",
    metadata,
    sa.Column("id", sa.String(80), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("previous_response_id", sa.String(80), nullable=True),
    sa.Column("conversation_id", sa.String(80), nullable=True),
    # the request's own input items, as input_items lists them (images by blob reference)
    sa.Column("input_items", sa.JSON, nullable=False),
    # the response object as it was answered
    sa.Column("body", sa.JSON, nullable=False),
    sa.Index("ix_responses_expires_at", "expires_at"),
)

conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("id", sa.String(80), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Index("ix_conversations_expires_at", "expires_at"),
)

conversation_items = sa.Table(
    "conversation_items",
    metadata,
    sa.Column("id", sa.String(80), primary_key=True),
    sa.Column(
        "conversation_id",
        sa.String(80),
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("item", sa.JSON, nullable=False),
    sa.UniqueConstraint("conversation_id", "position", name="uq_conversation_items_position"),
)

# Drafted reports, kept for their explicit second step (`POST /v1/reports/{id}/store`) on any
# replica: the report as it was answered (its SR file left out: that is a blob, `sr_sha256`)
# and where the SR would be stored (its WADO-RS URL under a configured PACS; null: nowhere).
report_drafts = sa.Table(
    "report_drafts",
    metadata,
    sa.Column("id", sa.String(80), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("report", sa.JSON, nullable=False),
    sa.Column("sr_sha256", sa.String(64), nullable=False),
    sa.Column("target_url", sa.Text, nullable=True),
    sa.Index("ix_report_drafts_expires_at", "expires_at"),
)

# Quotas shared by the replicas (storage/quota_counter.py): one token bucket per subject (a
# tenant, or a caller without one) and rate (`requests_per_minute`, `tokens_per_minute`,
# `tokens_per_day`). The capacity is the quota's, from the settings; a row holds what is left
# and when that was worked out (wall-clock seconds: the replicas share no other clock).
quota_buckets = sa.Table(
    "quota_buckets",
    metadata,
    sa.Column("subject", sa.Text, primary_key=True),
    sa.Column("rate", sa.String(40), primary_key=True),
    sa.Column("level", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
)

# Files (the Files API): uploads (`batch` input, `user_data`) and the output and error files a
# batch writes. A file's content is its chunks' data in `seq` order: an upload is cut into
# chunks of about a MiB as it streams in (a row `uploading` until the last one is written), a
# batch's output file has one chunk per line, at the position of its input line.
files = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.String(80), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("purpose", sa.String(40), nullable=False),
    sa.Column("filename", sa.Text, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("line_count", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("state", sa.String(20), nullable=False),
    # `batch` files: the one `url` every line names (the endpoint a batch of it must name)
    sa.Column("batch_endpoint", sa.String(40), nullable=True),
    sa.Index("ix_files_expires_at", "expires_at"),
    sa.Index("ix_files_owner_created_at", "owner", "created_at"),
)

file_chunks = sa.Table(
    "file_chunks",
    metadata,
    sa.Column(
        "file_id",
        sa.String(80),
        sa.ForeignKey("files.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

# Batches (storage/batch_store.py): OpenAI's batch object with its progress, who created it
# (owner, and the tenant, key and identity its lines run as), and the lease of the replica
# running it: a replica holds a batch while `lease_until` (wall-clock seconds) is ahead and
# renews it by heartbeat; a lease that ran out is another replica's to take.
BATCH_TIMES = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)
batches = sa.Table(
    "batches",
    metadata,
    sa.Column("id", sa.String(80), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("tenant", sa.Text, nullable=True),
    sa.Column("key_id", sa.Text, nullable=True),
    sa.Column("identity", sa.Text, nullable=True),
    sa.Column("endpoint", sa.String(40), nullable=False),
    sa.Column("input_file_id", sa.String(80), nullable=False),
    sa.Column("completion_window", sa.String(20), nullable=False),
    sa.Column("metadata", sa.JSON, nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    *(sa.Column(name, sa.Float, nullable=True) for name in BATCH_TIMES),
    sa.Column("output_file_id", sa.String(80), nullable=True),
    sa.Column("error_file_id", sa.String(80), nullable=True),
    sa.Column("errors", sa.JSON, nullable=True),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("completed", sa.BigInteger, nullable=False),
    sa.Column("failed", sa.BigInteger, nullable=False),
    sa.Column("lease_owner", sa.String(80), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Index("ix_batches_status", "status"),
    sa.Index("ix_batches_owner_created_at", "owner", "created_at"),
)
