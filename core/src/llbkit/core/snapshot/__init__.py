"""Snapshots: layers on disk, overlay mounts, and turning chains of layers into trees."""
