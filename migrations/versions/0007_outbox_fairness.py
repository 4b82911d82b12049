"""outbox: who holds a claim, whom a reply counts against; alerts for the desk

``claimed_by`` names the process that holds a reply's claim, so a claim renewed just
before a send can tell its own lease from one another instance took after it lapsed.
``counted_as`` (the recipient normalised: lower-case, no ``+tag``, Gmail dots gone) and
``recipient_domain`` let the reply caps count people and domains, not spellings.
``alerts`` keeps what the desk must fix (a relay refusing replies, a cap reached),
for `mailroute status`, the metrics and one mail per incident.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mailroute.store.models
from mailroute.core.addresses import counted_as, domain_of

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("counted_as", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("recipient_domain", sa.String(length=255), nullable=True))
        batch_op.create_index("ix_outbox_counted_created", ["counted_as", "created_at"])
        batch_op.create_index("ix_outbox_domain_created", ["recipient_domain", "created_at"])
        batch_op.create_index("ix_outbox_created", ["created_at"])
    _count_existing_replies()
    op.create_table(
        "alerts",
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("started_at", mailroute.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", mailroute.store.models.UTCDateTime(timezone=True),
                  nullable=False),
        sa.Column("notified_at", mailroute.store.models.UTCDateTime(timezone=True),
                  nullable=True),
        sa.Column("cleared_at", mailroute.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_alerts")),
    )


def _count_existing_replies() -> None:
    """Replies already queued count for the caps too (by the same rule as new ones)."""
    bind = op.get_bind()
    outbox = sa.table("outbox", sa.column("id", sa.Integer), sa.column("recipient", sa.String),
                      sa.column("counted_as", sa.String), sa.column("recipient_domain", sa.String))
    rows = bind.execute(sa.select(outbox.c.id, outbox.c.recipient)).all()
    for row in rows:
        bind.execute(
            outbox.update().where(outbox.c.id == row.id)
            .values(counted_as=counted_as(row.recipient), recipient_domain=domain_of(row.recipient))
        )


def downgrade() -> None:
    op.drop_table("alerts")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_created")
        batch_op.drop_index("ix_outbox_domain_created")
        batch_op.drop_index("ix_outbox_counted_created")
        batch_op.drop_column("recipient_domain")
        batch_op.drop_column("counted_as")
        batch_op.drop_column("claimed_by")
