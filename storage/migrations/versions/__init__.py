"""Alembic revision scripts, applied in order by ``storage.db.migrate`` (in: a connection; out: the schema)."""
