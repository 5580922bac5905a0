"""The ``oci`` and ``docker`` exporters: a build's result as an image tarball."""
