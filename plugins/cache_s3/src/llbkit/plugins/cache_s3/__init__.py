"""The s3 cache backend (``--export-cache type=s3,bucket=…,region=…``)."""
