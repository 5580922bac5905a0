"""The cache store: one state root per engine, with records in SQLite and data on disk."""
