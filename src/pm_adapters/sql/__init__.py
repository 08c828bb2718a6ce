"""SQL adapters: SQLAlchemy Core schema, unit of work, retry, migrations (PostgreSQL, SQLite)."""
