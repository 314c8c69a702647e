"""Persistence: SQLAlchemy Core tables, Alembic migrations, and named queries per domain action."""
