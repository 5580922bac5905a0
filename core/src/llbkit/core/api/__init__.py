"""BuildKit's gRPC API and session services as llbkit speaks them: the messages and service
stubs generated from ``_pb/*.proto`` (``scripts/gen_proto.sh``). The translation to the
Controller's typed records is :mod:`llbkit.core.control.wire`."""
