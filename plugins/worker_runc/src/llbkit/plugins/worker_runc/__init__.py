"""The OCI worker (``[worker.oci]``): exec steps in containers run by ``runc``."""
