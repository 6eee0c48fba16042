"""Budgets and approvals: a ledger line's estimate and committed cost, a queue row's approval, and
the budget alerts already raised.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.add_column(sa.Column("estimated_cost", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("cost", sa.Float(), nullable=True))
        batch.add_column(sa.Column("gpu_hours", sa.Float(), nullable=True))
        batch.add_column(sa.Column("rate_per_hour", sa.Float(), nullable=True))
        batch.add_column(sa.Column("cpus", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("memory_gib", sa.Float(), nullable=False, server_default="0"))
        # A price change part way through an attempt ends its line and opens the next segment.
        batch.add_column(sa.Column("segment", sa.Integer(), nullable=False, server_default="1"))
        batch.drop_constraint("uq_ledger_attempt", type_="unique")
        batch.create_unique_constraint("uq_ledger_segment", ["workload_id", "attempt", "segment"])
    op.create_index("ix_ledger_ended_started", "ledger", ["ended_at", "started_at"])
    with op.batch_alter_table("queue") as batch:
        batch.add_column(sa.Column("approval", sa.String(255), nullable=True))
        batch.add_column(sa.Column("approval_asked_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "ledger_days",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("team", sa.String(63), nullable=False),
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("pool", sa.String(63), nullable=False),
        sa.Column("location", sa.String(16), nullable=False),
        sa.Column("region", sa.String(63), nullable=False),
        sa.Column("gpu_hours", sa.Float(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.UniqueConstraint("day", "team", "project", "pool", "location", "region", name="uq_ledger_day"),
    )
    op.create_table(
        "budget_alerts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("budget", sa.String(255), nullable=False),
        sa.Column("period_start", sa.String(32), nullable=False),
        sa.Column("share", sa.Float(), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("spent", sa.Float(), nullable=False),
        sa.UniqueConstraint("budget", "period_start", "share", name="uq_budget_alert"),
    )


def downgrade() -> None:
    op.drop_table("budget_alerts")
    op.drop_table("ledger_days")
    with op.batch_alter_table("queue") as batch:
        batch.drop_column("approval_asked_at")
        batch.drop_column("approval")
    op.drop_index("ix_ledger_ended_started", "ledger")
    with op.batch_alter_table("ledger") as batch:
        batch.drop_constraint("uq_ledger_segment", type_="unique")
        batch.create_unique_constraint("uq_ledger_attempt", ["workload_id", "attempt"])
        batch.drop_column("segment")
        batch.drop_column("memory_gib")
        batch.drop_column("cpus")
        batch.drop_column("rate_per_hour")
        batch.drop_column("gpu_hours")
        batch.drop_column("cost")
        batch.drop_column("estimated_cost")
