"""``--export-cache type=local,dest=DIR``: the build cache in an OCI image layout directory."""
