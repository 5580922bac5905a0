"""llbkitd registers ``Control`` from its descriptor (Session's messages as bytes): every other
method must be registered exactly as the generated code registers it."""

from __future__ import annotations

from typing import Any

from llbkit.core.api._pb import control_pb2_grpc
from llbkit.core.api.protowire import bytes_message, bytes_message_data
from llbkit.core.daemon.server import _add_control


class _Recorder:
    """A server that keeps what is registered on it."""

    def __init__(self) -> None:
        self.registered: dict[str, Any] = {}
        self.generic: list[Any] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.registered = {f"/{service}/{name}": h for name, h in handlers.items()}


class _Servicer(control_pb2_grpc.ControlServicer):
    pass


def test_every_method_but_session_is_registered_as_the_generated_code_does() -> None:
    servicer = _Servicer()
    ours, generated = _Recorder(), _Recorder()
    _add_control(ours, servicer)  # type: ignore[arg-type]
    control_pb2_grpc.add_ControlServicer_to_server(servicer, generated)  # type: ignore[no-untyped-call]
    assert ours.registered.keys() == generated.registered.keys()
    assert len(ours.generic) == len(generated.generic) == 1
    for method, theirs in generated.registered.items():
        mine = ours.registered[method]
        assert (mine.request_streaming, mine.response_streaming) == (
            theirs.request_streaming,
            theirs.response_streaming,
        ), method
        if method.endswith("/Session"):
            assert mine.request_deserializer is bytes_message_data
            assert mine.response_serializer is bytes_message
            continue
        assert mine.request_deserializer == theirs.request_deserializer, method
        assert mine.response_serializer == theirs.response_serializer, method
    # and the generic handler answers for the same methods
    details = type("D", (), {"method": "/moby.buildkit.v1.Control/Solve"})()
    assert ours.generic[0].service(details) is not None
