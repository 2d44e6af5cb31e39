"""The catalog: what was backed up, where it lives, what happened to it.

SQLAlchemy models (``models``) are the single source of truth; Alembic migrations
(``migrations/``) build the same schema on SQLite (embedded default) and PostgreSQL
(production), where they also add row-level security, views and SQL functions.
The catalog knows nothing of storage backends or codecs.
"""
