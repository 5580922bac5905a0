# GENERATED FILE - DO NOT EDIT; regenerate with scripts/gen_known_plugins.py
"""Which distribution provides each plugin name llbkit's own repository ships."""

KNOWN_DISTRIBUTIONS: dict[tuple[str, str], str] = {
    ('llbkit.cache_backends', 'azblob'): 'llbkit-cache-azblob',
    ('llbkit.cache_backends', 'gha'): 'llbkit-cache-gha',
    ('llbkit.cache_backends', 'http'): 'llbkit-cache-http',
    ('llbkit.cache_backends', 'inline'): 'llbkit-cache-inline',
    ('llbkit.cache_backends', 'local'): 'llbkit-cache-local',
    ('llbkit.cache_backends', 'registry'): 'llbkit-cache-registry',
    ('llbkit.cache_backends', 's3'): 'llbkit-cache-s3',
    ('llbkit.exporters', 'docker'): 'llbkit-exporter-image',
    ('llbkit.exporters', 'image'): 'llbkit-exporter-image',
    ('llbkit.exporters', 'local'): 'llbkit-exporter-local',
    ('llbkit.exporters', 'oci'): 'llbkit-exporter-image',
    ('llbkit.exporters', 'tar'): 'llbkit-exporter-local',
    ('llbkit.frontends', 'dockerfile.v0'): 'llbkit-frontend-dockerfile',
    ('llbkit.workers', 'containerd'): 'llbkit-worker-containerd',
    ('llbkit.workers', 'oci'): 'llbkit-worker-runc',
}
