"""The installed entry points of llbkit's groups, read once and kept in a small index file.

Scanning every distribution's metadata (and importing ``importlib.metadata`` to do it) costs a
tenth of a warm no-op build, and the answer changes only when something is installed or removed.
The index is keyed by a fingerprint of what an install touches — each ``sys.path`` entry, the
``*.dist-info`` / ``*.egg-info`` folders in it and their ``entry_points.txt`` — so an install,
an uninstall or an editable reinstall makes the next process scan again, and a new path entry
this one.
Loading imports exactly the target an entry point names, as ``EntryPoint.load`` does.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llbkit.core.cachedir import CACHE_ENV, cache_dir, write_cache_file

__all__ = ["CACHE_ENV", "Entry", "index", "load_target"]

_PREFIX = "llbkit."
_FORMAT = 1


@dataclass(frozen=True)
class Entry:
    """One entry point, as much of it as listing and loading need."""

    group: str
    name: str
    value: str
    distribution: str
    version: str


def _fingerprint(paths: list[str]) -> str:
    import hashlib

    digest = hashlib.sha256(f"{_FORMAT}\0{sys.version}\0".encode())
    for n, entry in enumerate(paths):
        # The folder's own mtime is left out: its listing below already shows a distribution
        # coming or going, and a working directory (sys.path[0] under -m) changes all the time.
        try:
            names = sorted(os.listdir(entry or "."))
        except NotADirectoryError:  # a zip or egg file on the path
            try:
                st = os.stat(entry)
            except OSError:
                st = None
            digest.update(f"{entry}\0{st.st_mtime_ns if st else '-'}\n".encode())
            continue
        except OSError:
            digest.update(f"{entry}\0-\n".encode())
            continue
        # The first entry is the script's folder or the working directory: where it is does
        # not matter, only the distributions in it (commands run from anywhere share a scan).
        digest.update(f"{entry if n else ''}\0d\n".encode())
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                try:
                    mark = os.stat(os.path.join(entry or ".", name, "entry_points.txt"))
                    stamp = f"{mark.st_mtime_ns}:{mark.st_size}:{mark.st_ino}"
                except OSError:
                    stamp = "-"
                digest.update(f"{name}\0{stamp}\n".encode())
    return digest.hexdigest()


def _scan() -> dict[str, list[Entry]]:
    from importlib.metadata import distributions

    found: dict[str, list[Entry]] = {}
    seen: set[str] = set()
    for dist in distributions():
        name = dist.metadata["Name"] or "unknown"
        # As entry_points(): the first distribution of a name on sys.path hides later ones.
        normalized = re.sub(r"[-_.]+", "-", name).lower()
        if normalized in seen:
            continue
        seen.add(normalized)
        for ep in dist.entry_points:
            if ep.group.startswith(_PREFIX):
                entry = Entry(ep.group, ep.name, ep.value, name, dist.version)
                found.setdefault(ep.group, []).append(entry)
    return found


def _read(path: Path, fingerprint: str) -> dict[str, list[Entry]] | None:
    try:
        data = json.loads(path.read_bytes())
        if data.get("fingerprint") != fingerprint:
            return None
        return {
            group: [Entry(group, *row) for row in rows] for group, rows in data["groups"].items()
        }
    # A damaged or foreign file is only a missed shortcut: scan again and rewrite it.
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write(path: Path, fingerprint: str, groups: dict[str, list[Entry]]) -> None:
    rows = {
        group: [[e.name, e.value, e.distribution, e.version] for e in entries]
        for group, entries in groups.items()
    }
    data = json.dumps({"fingerprint": fingerprint, "groups": rows}, sort_keys=True).encode()
    write_cache_file(path, data)


#: ``sys.path`` -> index, for this process (one entry: a new path entry replaces it). What is
#: installed is read once per process, as ``importlib.metadata`` users see it: fingerprinting
#: the path again at each lookup cost a millisecond, five times a build.
_MEMO: dict[tuple[str, ...], dict[str, list[Entry]]] = {}


def index() -> dict[str, list[Entry]]:
    """``group -> entries`` for every ``llbkit.*`` group, in ``importlib.metadata``'s order."""
    paths = tuple(sys.path)
    known = _MEMO.get(paths)
    if known is not None:
        return known
    fingerprint = _fingerprint(list(paths))
    directory = cache_dir()
    # One file per interpreter and path, the first entry (the script's folder, or the working
    # directory under -m) aside, so that commands run from different places share it.
    where = "\0".join([sys.executable, sys.prefix, *sys.path[1:]])
    import hashlib

    key = hashlib.sha256(where.encode()).hexdigest()[:16]
    path = directory / f"entry-points-{key}.json" if directory is not None else None
    groups = _read(path, fingerprint) if path is not None else None
    if groups is None:
        groups = _scan()
        if path is not None:
            _write(path, fingerprint, groups)
    _MEMO.clear()
    _MEMO[paths] = groups
    return groups


def load_target(value: str) -> Any:
    """Import what an entry point's value (``module:attr.attr [extras]``) names."""
    target = value.split("[", 1)[0].strip()
    module, _, attrs = target.partition(":")
    obj: Any = importlib.import_module(module.strip())
    for attr in filter(None, attrs.strip().split(".")):
        obj = getattr(obj, attr)
    return obj
