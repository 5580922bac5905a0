"""llbkit's tar headers against Go's: ``tests/vectors/exports/goheaders.tar`` is what Go's
``archive/tar`` (the writer BuildKit and containerd use) wrote for the entries of
``goheaders.json``, each asked in PAX format with a whole-second time, as containerd asks."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from llbkit.core.gotar import GoTarWriter, go_header

VECTORS = Path(__file__).parent / "vectors" / "exports"


def _info(entry: dict[str, object]) -> tuple[tarfile.TarInfo, bytes]:
    data = str(entry["Data"]).encode()
    info = tarfile.TarInfo(str(entry["Name"]))
    info.type = str(entry["Type"]).encode()
    info.mode = int(entry["Mode"])  # type: ignore[call-overload]
    info.uid, info.gid = int(entry["Uid"]), int(entry["Gid"])  # type: ignore[call-overload]
    info.mtime = int(entry["Mtime"])  # type: ignore[call-overload]
    info.linkname = str(entry["Linkname"])
    info.uname, info.gname = str(entry["Uname"]), str(entry["Gname"])
    info.devmajor = int(entry["Devmajor"])  # type: ignore[call-overload]
    info.devminor = int(entry["Devminor"])  # type: ignore[call-overload]
    info.size = len(data)
    info.pax_headers = dict(entry["Pax"])  # type: ignore[call-overload]
    return info, data


def test_headers_are_gos_byte_for_byte() -> None:
    entries = json.loads((VECTORS / "goheaders.json").read_text())
    out = io.BytesIO()
    writer = GoTarWriter(out)
    for entry in entries:
        info, data = _info(entry)
        writer.add(info, io.BytesIO(data))
    writer.close()
    expected = (VECTORS / "goheaders.tar").read_bytes()
    assert out.getvalue() == expected
    # And tarfile reads the names back whole, whichever way each was stored.
    with tarfile.open(fileobj=io.BytesIO(expected)) as tar:
        assert tar.getnames()[: len(entries)] == [e["Name"].rstrip("/") for e in entries]


def test_a_long_ascii_path_is_split_not_extended() -> None:
    info = tarfile.TarInfo("d" * 60 + "/" + "e" * 60 + "/f")
    block = go_header(info)
    assert len(block) == 512  # no PAX header before it
    assert block[345:466].rstrip(b"\0") == b"d" * 60 + b"/" + b"e" * 60
    assert block[:100].rstrip(b"\0") == b"f"
