"""Ops that run in core, on snapshot directories: file actions, and later merge and diff."""
