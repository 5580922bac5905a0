"""llbkitd: the Controller served as BuildKit's ``moby.buildkit.v1.Control`` over gRPC — a
transport for the one engine, not a second one (``docs/daemon.md``)."""
