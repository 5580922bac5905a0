"""The ``dockerfile.v0`` frontend: a Dockerfile turned into LLB, as BuildKit builds it."""
