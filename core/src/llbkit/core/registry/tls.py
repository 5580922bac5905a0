"""One verifying TLS context per process, shared by every HTTP client core makes.

Building one loads the whole CA bundle (about 40 ms); httpx builds one per client, and a cold
build makes a client per image it resolves and pulls. An ``SSLContext`` may serve many
connections at once, so one is enough.
"""

from __future__ import annotations

import functools
import ssl

__all__ = ["default_context"]


@functools.cache
def default_context() -> ssl.SSLContext:
    """What ``verify=True`` means to httpx (``SSL_CERT_FILE``/``SSL_CERT_DIR``, else certifi)."""
    import httpx

    return httpx.create_ssl_context()
