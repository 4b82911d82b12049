"""Persistence: the tables (models), queries (repository) and transactions (db)."""

from mailroute.store.db import Store

__all__ = ["Store"]
