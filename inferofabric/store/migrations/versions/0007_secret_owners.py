"""Secrets have owners: the team a secret belongs to (NULL: the fabric's own, admin only) and the
teams it is shared with. Secrets stored before this revision become the fabric's own: no workload
may use them until an admin sets them again for a team (`fabric secret set NAME --team T`).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("secrets") as batch:
        batch.add_column(sa.Column("team", sa.String(63), nullable=True))
        batch.add_column(sa.Column("shared_with", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("secrets") as batch:
        batch.drop_column("shared_with")
        batch.drop_column("team")
