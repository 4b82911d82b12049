"""one identity per mailbox and per letter: canonical mailbox names, bytes saved once

Mailbox names become canonical (host in lower case, any spelling of INBOX as INBOX),
so that two configs spelling the folder differently store and lock under one name.
Letters' bytes are saved once, now backed by a unique index on the fingerprint,
so two writers can no longer both insert the same letter.

Databases that two instances wrote under two spellings may hold the same bytes
twice. Nothing is deleted: every later row with an earlier row's fingerprint is
marked ``copy_of`` that row (the unique index leaves copies out), and a copy not
yet decided becomes a ``duplicate`` of it, so it is not registered again. A row
whose canonical key is taken by another row keeps its old name; it is the same
UID of the same folder, so filing the other row files it too.

The (mailbox, UIDVALIDITY, UID) key is unique among letters still in the folder:
a server that reuses a filed letter's UID for a new letter gets it saved too.
Letters also get ``content_key`` (normalised sender, text and attachments), which
tells a re-delivery from another letter with the same Message-ID.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFILED = sa.text("filed_to IS NULL")
ORIGINALS = sa.text("copy_of IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("letters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("copy_of", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_letters_copy_of_letters"), "letters", ["copy_of"], ["id"]
        )
    _canonical_mailbox_names()
    _mark_copies()
    with op.batch_alter_table("letters", schema=None) as batch_op:
        batch_op.drop_constraint("uq_letters_mailbox_uidvalidity_uid", type_="unique")
        batch_op.drop_index("ix_letters_unfiled")
        batch_op.drop_index("ix_letters_sha256")
        batch_op.create_index("ix_letters_uid", ["mailbox", "uidvalidity", "uid"])
        batch_op.create_index(
            "uq_letters_unfiled_uid", ["mailbox", "uidvalidity", "uid"], unique=True,
            sqlite_where=UNFILED, postgresql_where=UNFILED,
        )
        batch_op.create_index(
            "uq_letters_sha256", ["sha256"], unique=True,
            sqlite_where=ORIGINALS, postgresql_where=ORIGINALS,
        )


def _canonical(name: str) -> str:
    """mailroute.identity.imap_mailbox_name, applied to a stored name (a copy: a
    migration must keep doing what it did when it was written)."""
    if not name.startswith("imap://"):
        return name
    authority, slash, folder = name[len("imap://"):].partition("/")
    user, at, host = authority.rpartition("@")
    folder = "INBOX" if folder.upper() == "INBOX" else folder
    return f"imap://{user}{at}{host.lower()}{slash}{folder}"


def _canonical_mailbox_names() -> None:
    bind = op.get_bind()
    names = bind.execute(sa.text("SELECT DISTINCT mailbox FROM letters")).scalars().all()
    for name in names:
        canonical = _canonical(name)
        if canonical == name:
            continue
        bind.execute(
            sa.text(
                "UPDATE letters SET mailbox = :canonical WHERE mailbox = :name AND NOT EXISTS ("
                " SELECT 1 FROM letters taken WHERE taken.mailbox = :canonical"
                " AND taken.uidvalidity = letters.uidvalidity AND taken.uid = letters.uid)"
            ),
            {"canonical": canonical, "name": name},
        )
    faults = bind.execute(sa.text("SELECT DISTINCT mailbox FROM letter_faults")).scalars().all()
    for name in faults:  # a retry schedule only: a letter set aside is tried at the next pass
        if _canonical(name) != name:
            bind.execute(sa.text("DELETE FROM letter_faults WHERE mailbox = :name"),
                         {"name": name})
    states = list(bind.execute(sa.text("SELECT name FROM mailboxes")).scalars().all())
    for name in states:
        canonical = _canonical(name)
        if canonical == name:
            continue
        if canonical in states:  # the status of one mailbox, kept once
            bind.execute(sa.text("DELETE FROM mailboxes WHERE name = :name"), {"name": name})
        else:
            bind.execute(
                sa.text("UPDATE mailboxes SET name = :canonical WHERE name = :name"),
                {"canonical": canonical, "name": name},
            )
            states.append(canonical)


def _mark_copies() -> None:
    """Later rows with the same bytes point at the first; undecided ones are duplicates."""
    bind = op.get_bind()
    bind.execute(
        sa.text(
            "UPDATE letters SET copy_of = ("
            " SELECT min(original.id) FROM letters original WHERE original.sha256 = letters.sha256)"
            " WHERE id > (SELECT min(original.id) FROM letters original"
            " WHERE original.sha256 = letters.sha256)"
        )
    )
    bind.execute(
        sa.text(
            "UPDATE letters SET state = 'duplicate', request_id = ("
            " SELECT original.request_id FROM letters original WHERE original.id = letters.copy_of)"
            " WHERE copy_of IS NOT NULL AND state = 'pending'"
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("letters", schema=None) as batch_op:
        batch_op.drop_index("uq_letters_sha256")
        batch_op.drop_index("uq_letters_unfiled_uid")
        batch_op.drop_index("ix_letters_uid")
        batch_op.create_index("ix_letters_sha256", ["sha256"])
        batch_op.create_index(
            "ix_letters_unfiled", ["mailbox", "uidvalidity"],
            sqlite_where=UNFILED, postgresql_where=UNFILED,
        )
        batch_op.create_unique_constraint(
            "uq_letters_mailbox_uidvalidity_uid", ["mailbox", "uidvalidity", "uid"]
        )
        batch_op.drop_constraint(op.f("fk_letters_copy_of_letters"), type_="foreignkey")
        batch_op.drop_column("copy_of")
        batch_op.drop_column("content_key")
