"""A gRPC client without grpcio: for commands that must start fast."""
