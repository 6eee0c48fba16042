"""Admission: the queue of waiting work, team usage for fair share, reservation owners.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue",
        sa.Column("workload_id", sa.String(255), primary_key=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False, index=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("team", sa.String(63), nullable=False),
        sa.Column("priority_class", sa.String(63), nullable=True),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("exclude", sa.Text(), nullable=False),
        sa.Column("failed_pool_health", sa.String(16), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("decision", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
    )
    # The cycle reads every waiting row but never its spec: a covering index keeps it off the table pages.
    op.create_index("ix_queue_cycle", "queue", ["state", "seq", "workload_id", "attempt", "version", "team",
                                                 "priority_class", "failed_pool_health", "exclude"])
    op.create_table(
        "team_usage",
        sa.Column("team", sa.String(63), primary_key=True),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("reservations") as batch:
        batch.add_column(sa.Column("team", sa.String(63), nullable=False, server_default=""))
        batch.add_column(sa.Column("location", sa.String(16), nullable=False, server_default=""))
        batch.add_column(sa.Column("priority_class", sa.String(63), nullable=False, server_default=""))
        batch.add_column(sa.Column("class_value", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("borrowing", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("expected_end", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("preempting", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("reservations") as batch:
        for column in ("preempting", "expected_end", "borrowing", "priority", "class_value", "priority_class",
                       "location", "team"):
            batch.drop_column(column)
    op.drop_table("team_usage")
    op.drop_index("ix_queue_cycle", table_name="queue")
    op.drop_table("queue")
