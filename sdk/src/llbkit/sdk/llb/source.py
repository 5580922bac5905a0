"""Source states: images, local directories, git repositories, HTTP files, OCI layouts, scratch."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llbkit.core.errors import UserError
from llbkit.core.reference import parse_reference
from llbkit.sdk.llb._vertex import Marshaler, Options, Output, Vertex, add_caps
from llbkit.sdk.llb.state import State

if TYPE_CHECKING:
    from llbkit.core.llb import pb
    from llbkit.core.plugins.context import Platform

__all__ = ["git", "http", "image", "local", "oci_layout", "scratch"]

_PLATFORM_SPECIFIC = ("docker-image://", "oci-layout://")
_SSH_REMOTE = re.compile(r"^[a-zA-Z0-9_-]+@[a-zA-Z0-9.-]+:")  # Go's IsImplicitSSHTransport


@dataclass(eq=False)
class SourceOp(Vertex):
    """A ``pb.SourceOp``; only image and OCI-layout sources keep a platform."""

    identifier: str
    attrs: dict[str, str]
    caps: tuple[str, ...]
    options: Options = field(default_factory=Options)

    def set_follow_paths(self, paths: Sequence[str]) -> None:
        """Give a local source its follow paths after the states reading it were made, as
        BuildKit's Dockerfile frontend does once it knows every path the build reads (its
        ``mutableOutput``); before marshalling only."""
        if not self.identifier.startswith("local://"):
            raise ValueError(f"{self.identifier}: only a local source has follow paths")
        if paths:
            self.attrs["local.followpaths"] = go_json_list(paths)
            if "source.local.followpaths" not in self.caps:
                self.caps = (*self.caps, "source.local.followpaths")

    def to_op(self, m: Marshaler) -> tuple[pb.Op, pb.OpMetadata]:
        op, meta = m.op_base(self.options, None)
        op.source.identifier = self.identifier
        for key, value in self.attrs.items():
            op.source.attrs[key] = value
        if not self.identifier.startswith(_PLATFORM_SPECIFIC):
            op.ClearField("platform")
        add_caps(meta, *self.caps)
        return op, meta


def go_json_list(items: Sequence[str]) -> str:
    """A list of strings as Go's ``json.Marshal`` writes it (what BuildKit's client puts in
    attributes): compact, UTF-8 kept, ``<``, ``>``, ``&``, U+2028 and U+2029 escaped."""
    text = json.dumps(list(items), ensure_ascii=False, separators=(",", ":"))
    for char in "<>&\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


def _state(op: SourceOp) -> State:
    # As Go's client: a source made for a platform makes the state's ops for it too.
    return State(output=Output(op, 0), platform=op.options.platform)


def source(identifier: str, attrs: dict[str, str] | None = None, **options: object) -> State:
    """Any source by identifier, e.g. one a third-party source plugin serves (``scheme://…``)."""
    return _state(SourceOp(identifier, dict(attrs or {}), (), Options(**options)))  # type: ignore[arg-type]


def scratch() -> State:
    """The empty filesystem."""
    return State()


def image(
    ref: str,
    *,
    platform: Platform | None = None,
    resolve_mode: str | None = None,
    layer_limit: int | None = None,
    record_type: str | None = None,
    **options: object,
) -> State:
    """A container image; ``alpine`` becomes ``docker.io/library/alpine:latest``.

    :param resolve_mode: ``default``, ``pull`` or ``local``.
    """
    # As Go's client: an unparsable reference is sent as given, and the engine rejects it.
    with contextlib.suppress(UserError):
        ref = str(parse_reference(ref))
    attrs: dict[str, str] = {}
    caps = ["source.image"]
    if resolve_mode and resolve_mode != "default":
        attrs["image.resolvemode"] = resolve_mode
        if resolve_mode == "pull":
            caps.append("source.image.resolvemode")
    if record_type:
        attrs["image.recordtype"] = record_type
    if layer_limit is not None:
        attrs["image.layerlimit"] = str(layer_limit)
        caps.append("source.image.layerlimit")
    opts = Options(platform=platform, **options)  # type: ignore[arg-type]
    return _state(SourceOp("docker-image://" + ref, attrs, tuple(caps), opts))


def local(
    name: str,
    *,
    include_patterns: Sequence[str] = (),
    exclude_patterns: Sequence[str] = (),
    follow_paths: Sequence[str] = (),
    shared_key_hint: str = "",
    session_id: str = "",
    differ: str = "",
    unique: str | None = None,
    **options: object,
) -> State:
    """A directory the client exposes as ``name``.

    Without a session, the op gets a ``local.unique`` id so two clients never share a vertex;
    pass ``unique=`` for reproducible definitions.
    """
    attrs: dict[str, str] = {}
    caps = []
    if session_id:
        attrs["local.session"] = session_id
        caps.append("source.local.sessionid")
    if include_patterns:
        attrs["local.includepattern"] = go_json_list(include_patterns)
        caps.append("source.local.includepatterns")
    if follow_paths:
        attrs["local.followpaths"] = go_json_list(follow_paths)
        caps.append("source.local.followpaths")
    if exclude_patterns:
        attrs["local.excludepatterns"] = go_json_list(exclude_patterns)
        caps.append("source.local.excludepatterns")
    if shared_key_hint:
        attrs["local.sharedkeyhint"] = shared_key_hint
        caps.append("source.local.sharedkeyhint")
    if differ:
        attrs["local.differ"] = differ
    caps.append("source.local")
    if not session_id:
        attrs["local.unique"] = unique if unique is not None else _unique_id()
        caps.append("source.local.unique")
    return _state(SourceOp("local://" + name, attrs, tuple(caps), Options(**options)))  # type: ignore[arg-type]


def _unique_id() -> str:
    """An ID as BuildKit's ``identity.NewID`` makes one: 17 random bytes, the top bit set (so
    the number always has the same count of digits), in base 36, the first digit dropped and
    the next 25 kept."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    value = int.from_bytes(os.urandom(17), "big") | 1 << 135
    digits = []
    while value:
        value, digit = divmod(value, 36)
        digits.append(alphabet[digit])
    return "".join(reversed(digits))[1:26]


def git(
    remote: str,
    ref: str = "",
    *,
    keep_git_dir: bool = False,
    subdir: str = "",
    auth_header_secret: str = "GIT_AUTH_HEADER",
    auth_token_secret: str = "GIT_AUTH_TOKEN",
    known_ssh_hosts: str = "",
    mount_ssh_sock: str = "",
    **options: object,
) -> State:
    """A git repository at ``ref`` (branch, tag or commit), optionally a subdirectory of it."""
    url = remote.split("#", 1)[0]
    known_scheme = re.match(r"^(https?|git|ssh)://", remote)
    ssh = bool(known_scheme and known_scheme.group(1) == "ssh")
    if known_scheme:
        remote = remote[known_scheme.end() :]
    elif _SSH_REMOTE.match(remote):
        ssh = True
    else:
        url = "https://" + url
    if ssh:
        # As Go's client names an SSH remote: without its user, "host:path" as "host/path".
        remote = remote.split("@", 1)[-1]
        host, colon, path = remote.partition(":")
        if colon:
            remote = f"{host}/{path}"
    identifier = remote
    if ref or subdir:
        identifier += "#" + ref + (f":{subdir}" if subdir else "")
    attrs: dict[str, str] = {}
    caps = []
    if keep_git_dir:
        attrs["git.keepgitdir"] = "true"
        caps.append("source.git.keepgitdir")
    if url:
        attrs["git.fullurl"] = url
        caps.append("source.git.fullurl")
    if auth_token_secret:
        attrs["git.authtokensecret"] = auth_token_secret
    if auth_header_secret:
        attrs["git.authheadersecret"] = auth_header_secret
    if ssh:
        if known_ssh_hosts:
            attrs["git.knownsshhosts"] = known_ssh_hosts
        caps.append("source.git.knownsshhosts")
        attrs["git.mountsshsock"] = mount_ssh_sock or "default"
        caps.append("source.git.mountsshsock")
    caps.append("source.git")
    return _state(SourceOp("git://" + identifier, attrs, tuple(caps), Options(**options)))  # type: ignore[arg-type]


def http(
    url: str,
    *,
    checksum: str = "",
    filename: str = "",
    chmod: int = 0,
    uid: int = 0,
    gid: int = 0,
    **options: object,
) -> State:
    """A file downloaded from ``url``; ``checksum`` (``sha256:…``) pins its content."""
    attrs: dict[str, str] = {}
    caps = []
    if checksum:
        attrs["http.checksum"] = checksum
        caps.append("source.http.checksum")
    if filename:
        attrs["http.filename"] = filename
    if chmod:
        attrs["http.perm"] = "0" + format(chmod, "o")
        caps.append("source.http.perm")
    if uid:
        attrs["http.uid"] = str(uid)
        caps.append("soruce.http.uidgid")  # sic: BuildKit's capability id has this typo
    if gid:
        attrs["http.gid"] = str(gid)
        caps.append("soruce.http.uidgid")
    caps.append("source.http")
    return _state(SourceOp(url, attrs, tuple(dict.fromkeys(caps)), Options(**options)))  # type: ignore[arg-type]


def oci_layout(
    ref: str,
    *,
    store_id: str = "",
    session_id: str = "",
    layer_limit: int | None = None,
    platform: Platform | None = None,
    **options: object,
) -> State:
    """An image from an OCI layout the client exposes (``<store>@sha256:…``)."""
    attrs: dict[str, str] = {}
    if session_id:
        attrs["oci.session"] = session_id
    if store_id:
        attrs["oci.store"] = store_id
    if layer_limit is not None:
        attrs["oci.layerlimit"] = str(layer_limit)
    opts = Options(platform=platform, **options)  # type: ignore[arg-type]
    return _state(SourceOp("oci-layout://" + ref, attrs, ("source.ocilayout",), opts))
