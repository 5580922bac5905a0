"""BuildKit's LLB: the wire format, exact marshaling, and verified loading of definitions.

``pb`` is the generated ``pb`` package (``pb.Op``, ``pb.Definition``...). Op bytes are hashed as
received; :func:`marshal` produces the bytes BuildKit's Go code would.
"""

from llbkit.core.llb._pb import ops_pb2 as pb
from llbkit.core.llb.definition import LoadedDefinition, Vertex, load_definition, output_count
from llbkit.core.llb.digest import digest_of, is_digest, short
from llbkit.core.llb.marshal import marshal

__all__ = [
    "LoadedDefinition",
    "Vertex",
    "digest_of",
    "is_digest",
    "load_definition",
    "marshal",
    "output_count",
    "pb",
    "short",
]
