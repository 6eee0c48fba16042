"""The cost ledger: one line per attempt (what it held, where, at what price, from when to when).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("workload_id", sa.String(255), nullable=False, index=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("team", sa.String(63), nullable=False, index=True),
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("pool", sa.String(63), nullable=False),
        sa.Column("location", sa.String(16), nullable=False),
        sa.Column("region", sa.String(63), nullable=False),
        sa.Column("gpu_type", sa.String(64), nullable=True),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("price_per_gpu_hour", sa.Float(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("admitted_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True, index=True),
        sa.UniqueConstraint("workload_id", "attempt", name="uq_ledger_attempt"),
    )


def downgrade() -> None:
    op.drop_table("ledger")
