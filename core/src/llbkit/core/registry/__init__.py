"""Talking to OCI registries (the distribution API)."""
