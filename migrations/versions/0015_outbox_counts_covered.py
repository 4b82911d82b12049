"""outbox: the desk-wide and per-domain reply counts read only their indexes

Each batch a backlog decides counts the automatic replies of the last hour, desk-wide and
per recipient domain. The indexes held ``created_at`` (and the domain) but not ``kind``,
so each count read every reply of the window from the table: with 9,000 replies queued
by a backlog, 12.6 and 6.4 ms a batch on SQLite, growing with the backlog. With ``kind``
in the index they are 1.1 and 0.9 ms.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_created")
        batch_op.drop_index("ix_outbox_domain_created")
        batch_op.create_index("ix_outbox_created_kind", ["created_at", "kind"])
        batch_op.create_index("ix_outbox_domain_created_kind",
                              ["recipient_domain", "created_at", "kind"])


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_domain_created_kind")
        batch_op.drop_index("ix_outbox_created_kind")
        batch_op.create_index("ix_outbox_domain_created", ["recipient_domain", "created_at"])
        batch_op.create_index("ix_outbox_created", ["created_at"])
