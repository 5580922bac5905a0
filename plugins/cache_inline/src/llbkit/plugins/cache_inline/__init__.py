"""The inline cache backend (``--export-cache type=inline``)."""
