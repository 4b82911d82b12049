"""retention: when a letter's bytes were purged and a request anonymized

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mailroute.store.models

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = mailroute.store.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("letters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purged_at", UTC_DATETIME, nullable=True))
        batch_op.create_index("ix_letters_received_at", ["received_at"])
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("anonymized_at", UTC_DATETIME, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_column("anonymized_at")
    with op.batch_alter_table("letters", schema=None) as batch_op:
        batch_op.drop_index("ix_letters_received_at")
        batch_op.drop_column("purged_at")
