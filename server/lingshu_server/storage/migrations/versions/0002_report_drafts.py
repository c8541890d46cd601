"""Drafted reports (their SR files are blobs), for the second step on any replica.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "report_drafts",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("sr_sha256", sa.String(64), nullable=False),
        sa.Column("target_url", sa.Text, nullable=True),
    )
    op.create_index("ix_report_drafts_expires_at", "report_drafts", ["expires_at"])


def downgrade() -> None:
    # the drafts' SR files go with them, unless something else holds the same content
    op.execute("DELETE FROM blob_refs WHERE object_id IN (SELECT id FROM report_drafts)")
    op.execute("DELETE FROM blobs WHERE sha256 NOT IN (SELECT sha256 FROM blob_refs)")
    op.drop_table("report_drafts")
