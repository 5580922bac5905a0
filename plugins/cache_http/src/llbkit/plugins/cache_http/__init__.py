"""The http cache backend (``--export-cache type=http,url=…``)."""
