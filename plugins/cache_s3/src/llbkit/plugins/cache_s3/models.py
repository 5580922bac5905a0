"""botocore's data files (S3's service model, its endpoint rules, the list of services), kept
between processes.

A process's first S3 client reads botocore's JSON models (some gzipped, every object made an
``OrderedDict``) and lists every service's directory to check that ``s3`` is one: about 60 ms,
a tenth of an embedded build that exports a small cache. What was read is kept in the driver's
cache directory (every engine of the user shares it, so a fresh root gains too), marshalled
(data only: reading it runs no code), each file under its path, size and time, the services
under their directories' times; a later process reads that instead. Whatever is missing or
stale is read from botocore as before.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import marshal
import os
import secrets
from pathlib import Path
from typing import Any

from botocore.loaders import JSONFileLoader, Loader

__all__ = ["KeptLoader", "kept_loader"]

#: the forms botocore's data files come in, in its order of preference
_FORMS = ((".json", open), (".json.gz", gzip.open))


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _fresh(entry: Any, stamp: object) -> Any:
    """What ``entry`` (stamp, data) holds if it was kept under ``stamp``, else None (a file
    another version wrote, or damaged, is a miss)."""
    try:
        kept_stamp, data = entry
        if kept_stamp == stamp:  # marshal keeps tuples tuples
            return data
    except (TypeError, ValueError):
        pass
    return None


class KeptFiles(JSONFileLoader):  # type: ignore[misc]
    """botocore's file loader, answering from what an earlier process kept when the file is
    unchanged. Each file is kept marshalled as it was read, and every answer is a fresh copy
    of it (botocore merges its extras into a model in place). Objects are plain dicts,
    ordered as read, either way."""

    def __init__(self, kept: dict[str, Any]) -> None:
        self.kept = kept
        self.added = False

    def load_file(self, file_path: str) -> Any:
        for suffix, opener in _FORMS:
            full = file_path + suffix
            stamp = _stamp(full)
            if stamp is None:
                continue
            kept = _fresh(self.kept.get(full), stamp)
            if kept is not None:
                with contextlib.suppress(ValueError, EOFError, TypeError):
                    return marshal.loads(kept)
            with opener(full, "rb") as f:
                kept = marshal.dumps(json.loads(f.read().decode()))
            self.kept[full] = (stamp, kept)
            self.added = True
            return marshal.loads(kept)
        return None


class KeptLoader(Loader):  # type: ignore[misc]
    """botocore's data loader, with the list of services kept too."""

    def __init__(self, files: KeptFiles, paths: list[str] | None, where: Path | None) -> None:
        super().__init__(extra_search_paths=paths, file_loader=files)
        self.files = files
        self.where = where

    def list_available_services(self, type_name: str) -> list[str]:
        key = f"services:{type_name}"
        stamp = tuple((path, _stamp(path)) for path in self.search_paths)
        found = _fresh(self.files.kept.get(key), stamp)
        if isinstance(found, list):
            return list(found)
        services: list[str] = super().list_available_services(type_name)
        self.files.kept[key] = (stamp, services)
        self.files.added = True
        return services

    def save(self) -> None:
        """Keep what this process read that was not kept yet (a failure only costs the next
        process the reading again)."""
        if self.where is None or not self.files.added:
            return
        self.files.added = False
        tmp = self.where.with_name(f".{self.where.name}.{secrets.token_hex(4)}")
        try:
            self.where.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(marshal.dumps(self.files.kept))
            os.replace(tmp, self.where)
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                tmp.unlink()


def kept_loader(session: Any, cache_dir: Path | None) -> KeptLoader:
    """The data loader for ``session`` as botocore would make it (``AWS_DATA_PATH`` read as
    ``create_loader`` reads it), reading from and keeping to ``cache_dir``."""
    import botocore

    search = session.get_config_variable("data_path")
    paths = None
    if search is not None:
        paths = [os.path.expanduser(os.path.expandvars(p)) for p in search.split(os.pathsep)]
    where = cache_dir / f"botocore-{botocore.__version__}.marshal" if cache_dir else None
    kept: dict[str, Any] = {}
    if where is not None:
        with contextlib.suppress(OSError, ValueError, EOFError, TypeError):
            loaded = marshal.loads(where.read_bytes())
            if isinstance(loaded, dict):
                kept = loaded
    return KeptLoader(KeptFiles(kept), paths, where)
