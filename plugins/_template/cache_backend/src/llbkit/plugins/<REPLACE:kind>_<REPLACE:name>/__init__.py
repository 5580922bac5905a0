"""``--export-cache type=<REPLACE:name>,dest=DIR``: the build cache's blobs and index in a directory."""
