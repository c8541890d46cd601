"""Stored responses, conversations and the blobs they share.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "blob_refs",
        sa.Column("object_id", sa.String(80), primary_key=True),
        sa.Column("sha256", sa.String(64), sa.ForeignKey("blobs.sha256"), primary_key=True),
    )
    op.create_index("ix_blob_refs_sha256", "blob_refs", ["sha256"])
    op.create_table(
        "responses",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("previous_response_id", sa.String(80), nullable=True),
        sa.Column("conversation_id", sa.String(80), nullable=True),
        sa.Column("input_items", sa.JSON, nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
    )
    op.create_index("ix_responses_expires_at", "responses", ["expires_at"])
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
    )
    op.create_index("ix_conversations_expires_at", "conversations", ["expires_at"])
    op.create_table(
        "conversation_items",
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


def downgrade() -> None:
    for table in ("conversation_items", "conversations", "responses", "blob_refs", "blobs"):
        op.drop_table(table)
