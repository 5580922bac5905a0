"""The solver: cache keys for vertices, and running only what the cache cannot answer."""
