"""Alembic migrations of the tradevet schema (in: a connection from ``storage.db``; out: an up-to-date schema)."""
