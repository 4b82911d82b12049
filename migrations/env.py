"""Alembic environment: run by `mailroute db upgrade` (see mailroute/store/db.py)."""

from alembic import context
from sqlalchemy import create_engine, event

from mailroute.store.db import sqlite_page_size
from mailroute.store.models import Base

target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url") or ""
    engine = create_engine(url)
    if url.startswith("sqlite"):  # the first migration creates the file: its page size now
        event.listen(engine, "connect", lambda connection, _record: sqlite_page_size(connection))
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies tables
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
