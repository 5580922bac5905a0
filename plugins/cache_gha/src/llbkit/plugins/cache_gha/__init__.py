"""The gha cache backend (``--export-cache type=gha``): the GitHub Actions cache service."""
