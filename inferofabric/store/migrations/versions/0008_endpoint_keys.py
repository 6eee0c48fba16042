"""Endpoint keys: a caller's credential for one endpoint (only its SHA-256 is kept).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "endpoint_keys",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("endpoint", sa.String(63), nullable=False),
        sa.Column("team", sa.String(63), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("label", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(255), nullable=True),
        sa.UniqueConstraint("digest", name="uq_endpoint_key_digest"),
    )
    op.create_index("ix_endpoint_keys_endpoint", "endpoint_keys", ["endpoint"])


def downgrade() -> None:
    op.drop_index("ix_endpoint_keys_endpoint", "endpoint_keys")
    op.drop_table("endpoint_keys")
