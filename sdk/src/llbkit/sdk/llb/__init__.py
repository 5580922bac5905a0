"""Author LLB in Python: the counterpart of BuildKit's Go ``client/llb``.

States are immutable; sources make them, ``run`` and ``file`` derive new ones, and ``marshal``
gives the same op bytes (and so the same digests) as BuildKit's Go client for the same graph::

    from llbkit.sdk import llb

    base = llb.image("busybox")
    out = base.run(shell="echo hi > /hi").root()
    data = out.marshal().to_bytes()
"""

from llbkit.core.plugins.context import Platform
from llbkit.sdk.llb.definition_op import from_definition
from llbkit.sdk.llb.exec import SSH, Bind, Cache, ExecState, Mount, Secret, Tmpfs
from llbkit.sdk.llb.file import FileAction, copy, mkdir, mkfile, rm
from llbkit.sdk.llb.merge import diff, merge
from llbkit.sdk.llb.source import git, http, image, local, oci_layout, scratch, source
from llbkit.sdk.llb.state import Definition, State

__all__ = [
    "SSH",
    "Bind",
    "Cache",
    "Definition",
    "ExecState",
    "FileAction",
    "Mount",
    "Platform",
    "Secret",
    "State",
    "Tmpfs",
    "copy",
    "diff",
    "from_definition",
    "git",
    "http",
    "image",
    "local",
    "merge",
    "mkdir",
    "mkfile",
    "oci_layout",
    "rm",
    "scratch",
    "source",
]
