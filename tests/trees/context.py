"""The build context the tree cases read: every kind of entry a copy has to get right."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

FIXED = 1_600_000_000  # 2020-09-13: a time no build writes by itself


def _tar(path: Path, mode: str) -> None:
    with tarfile.open(path, mode) as tar:
        for name, data in (("arch/one.txt", b"one\n"), ("arch/two/deep.txt", b"deep\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = FIXED
            info.mode = 0o640
            tar.addfile(info, io.BytesIO(data))


def make_context(root: Path) -> Path:
    """Write the context under ``root`` (deterministic: same names, modes, times, contents)."""
    ctx = root / "context"
    (ctx / "dir" / "sub").mkdir(parents=True)
    (ctx / "dir" / "a.txt").write_text("a\n")
    (ctx / "dir" / "b.md").write_text("b\n")
    (ctx / "dir" / "sub" / "c.txt").write_text("c\n")
    (ctx / "exec.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(ctx / "exec.sh", 0o755)
    (ctx / "hard1").write_text("same inode\n")
    os.link(ctx / "hard1", ctx / "hard2")
    os.symlink("dir/a.txt", ctx / "link-to-file")
    os.symlink("dir", ctx / "link-to-dir")
    os.symlink("/dir/sub", ctx / "abs-link")
    os.symlink("../../etc/passwd", ctx / "escaping-link")
    (ctx / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nalice:x:1234:2345::/:/bin/sh\n")
    (ctx / "group").write_text("root:x:0:\nstaff:x:2345:\nwheel:x:777:\n")
    (ctx / "arch").mkdir()
    _tar(ctx / "arch" / "plain.tar", "w")
    _tar(ctx / "arch" / "zipped.tar.gz", "w:gz")
    _tar(ctx / "arch" / "zipped.tar.bz2", "w:bz2")
    _tar(ctx / "arch" / "zipped.tar.xz", "w:xz")
    (ctx / "arch" / "not-an-archive.tar").write_text("just text\n")
    for path in sorted(ctx.rglob("*"), reverse=True):
        os.utime(path, (FIXED, FIXED), follow_symlinks=False)
    os.utime(ctx, (FIXED, FIXED))
    return ctx
