"""``--export-cache type=registry,ref=host/repo:tag``: the build cache in an image registry."""
