"""letters the server would not serve or file, each retried on its own

One letter the server answers NO [SERVERBUG] for, or sends a broken literal for, or
refuses to move (over quota), used to fail the whole pass: nothing else was saved or
filed. Such a letter is now set aside with its own backoff, and this table is where
`status` and the metrics find it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mailroute.store.models

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "letter_faults",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox", sa.String(length=255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "first_failed_at", mailroute.store.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "next_attempt_at", mailroute.store.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_letter_faults")),
        sa.UniqueConstraint(
            "mailbox", "uidvalidity", "uid", name=op.f("uq_letter_faults_mailbox_uidvalidity_uid")
        ),
    )


def downgrade() -> None:
    op.drop_table("letter_faults")
