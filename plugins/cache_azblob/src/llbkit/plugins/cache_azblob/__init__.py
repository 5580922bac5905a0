"""The azblob cache backend (``--export-cache type=azblob,account_url=…``)."""
