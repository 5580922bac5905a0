"""Filesystem helpers shared by sources, file ops and frontends."""
