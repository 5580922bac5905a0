"""What ``build``'s flags mean, as buildctl reads them (``--output``, ``--export-cache``,
``--secret``...), apart from the command itself: the light client reads them too, and must
not pay for click to do so."""

from __future__ import annotations

import os
import sys

from llbkit.core.errors import ConfigError, UserError

TYPE_CHECKING = False  # typing's import is a tenth of a daemon client's start
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "FILE_OUTPUTS",
    "is_archive",
    "decoded_metadata",
    "write_metadata",
    "pairs",
    "parse_cache",
    "parse_output",
    "parse_secret",
]


def _csv(flag: str, value: str) -> dict[str, str]:
    import csv

    try:
        fields = next(csv.reader([value]))
    except (csv.Error, StopIteration):
        raise ConfigError(f"{flag} {value!r}: not a comma-separated list of key=value") from None
    attrs: dict[str, str] = {}
    for item in fields:
        key, sep, val = item.partition("=")
        if not sep:
            raise ConfigError(f"{flag} {value!r}: {item!r} is not key=value")
        attrs[key.strip()] = val
    return attrs


#: the outputs that are one file (buildctl's list): standard output when no dest is given
FILE_OUTPUTS = ("oci", "docker", "tar")


def is_archive(attrs: dict[str, str]) -> bool:
    """Whether an ``oci``/``docker``/``tar`` output is one file (``tar=false``: a directory),
    read as the exporters read the option."""
    return attrs.get("tar", "true").lower() not in ("false", "0")


def parse_output(value: str) -> tuple[str, dict[str, str]]:
    """``type=local,dest=out`` → (``local``, ``{"dest": "out"}``)."""
    attrs = _csv("--output", value)
    kind = attrs.pop("type", "")
    if not kind:
        raise ConfigError(f"--output {value!r}: type= is required (local, tar, image, oci…)")
    if kind in FILE_OUTPUTS and is_archive(attrs):
        # Checked before the build, as buildctl opens the file before it builds.
        dest = attrs.get("dest", "-") or "-"
        if dest == "-" and sys.stdout.isatty():
            raise ConfigError(
                f"--output {value!r}: dest= is required: refusing to write an archive to a "
                "terminal (or redirect standard output)"
            )
        if os.path.isdir(dest):
            raise ConfigError(f"--output {value!r}: {dest} is a directory; dest= names a file")
        if dest != "-":
            _can_write(value, dest)
        attrs["dest"] = dest
    return kind, attrs


def _can_write(value: str, dest: str) -> None:
    """The folder the archive lands in, made now and writable: a mistyped path fails before
    the build, as buildctl's does (it opens the file first), not after it."""
    folder = os.path.dirname(os.path.abspath(dest))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:  # a file where a folder must be is "exists" to makedirs
        reason = "Not a directory" if isinstance(err, FileExistsError) else err.strerror
        raise ConfigError(f"--output {value!r}: cannot write {dest}: {reason}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"--output {value!r}: cannot write {dest}: {folder} is not writable")


def parse_cache(flag: str, value: str) -> tuple[str, dict[str, str]]:
    """``type=registry,ref=R`` → (``registry``, ``{"ref": R}``); as buildctl, keys are
    case-insensitive and a value without ``type=`` is a registry ref (deprecated there too)."""
    if "type=" not in value:
        print(
            f"WARN: {flag} <ref> is deprecated; use {flag} type=registry,ref=<ref> instead",
            file=sys.stderr,
        )
        return "registry", {"ref": value}
    attrs = {k.lower(): v for k, v in _csv(flag, value).items()}
    kind = attrs.pop("type", "")
    if not kind:
        raise ConfigError(f"{flag} {value!r}: type= is required (registry, local, inline…)")
    return kind, attrs


def pairs(flag: str, values: tuple[str, ...]) -> dict[str, str]:
    found = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"{flag} {value!r}: expected name=path")
        found[name] = path
    return found


def parse_secret(value: str) -> tuple[str, bytes]:
    """``id=x,src=file`` / ``id=x,env=VAR`` / ``type=env,id=VAR`` → (id, bytes)."""
    attrs = _csv("--secret", value)
    kind = attrs.pop("type", "file")
    sid = attrs.pop("id", "")
    src = attrs.pop("src", "") or attrs.pop("source", "")
    env = attrs.pop("env", "")
    if attrs:
        raise ConfigError(f"--secret {value!r}: unknown key {sorted(attrs)[0]!r}")
    if kind == "env" or env:
        env = env or src or sid
        if env not in os.environ:
            raise ConfigError(f"--secret {value!r}: environment variable {env} is not set")
        return sid or env, os.environ[env].encode()
    if kind != "file":
        raise ConfigError(f"--secret {value!r}: type must be file or env")
    if not sid:
        raise ConfigError(f"--secret {value!r}: id= is required")
    path = src or sid
    try:
        with open(path, "rb") as secret:
            return sid, secret.read()
    except OSError as err:
        raise ConfigError(f"--secret {value!r}: cannot read {path}: {err.strerror}") from None


def decoded_metadata(value: Any) -> Any:
    """As buildctl writes metadata: a value that is base64 of a JSON object becomes the object."""
    import base64
    import binascii
    import json

    if not isinstance(value, str):
        return value
    try:
        decoded = json.loads(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError, RecursionError):
        return value
    return decoded if isinstance(decoded, dict) else value


def write_metadata(path: str, response: dict[str, str]) -> None:
    """``--metadata-file``: the exporters' answer as buildctl writes it."""
    import json

    shown = {k: decoded_metadata(v) for k, v in response.items()}
    try:
        with open(path, "w", encoding="utf-8") as out:
            out.write(json.dumps(shown, indent=2, sort_keys=True) + "\n")
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror}") from None
