"""llbkit as a client of a daemon (``--addr``/``BUILDKIT_HOST``): the Controller's methods over
BuildKit's gRPC API, and the session through which the daemon reaches this machine's files,
secrets, SSH agents and outputs."""
