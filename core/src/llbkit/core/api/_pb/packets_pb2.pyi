# GENERATED FILE - DO NOT EDIT; regenerate with scripts/gen_proto.sh
from llbkit.core.api._pb import fsutil_pb2 as _fsutil_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Packets(_message.Message):
    __slots__ = ("packets",)
    PACKETS_FIELD_NUMBER: _ClassVar[int]
    packets: _containers.RepeatedCompositeFieldContainer[_fsutil_pb2.Packet]
    def __init__(self, packets: _Optional[_Iterable[_Union[_fsutil_pb2.Packet, _Mapping]]] = ...) -> None: ...
