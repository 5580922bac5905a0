"""Reading a rootfs's /etc/passwd and /etc/group: always inside the rootfs, short lines kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llbkit.core.errors import UserError
from llbkit.core.ops.users import read_entries, resolve_user


def test_a_symlinked_passwd_never_reads_the_host(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("evil:x:4242:4242::/:/bin/sh\n")
    (outside / "group").write_text("evilgroup:x:4343:\n")
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    os.symlink(outside / "passwd", rootfs / "etc/passwd")
    os.symlink(outside / "group", rootfs / "etc/group")
    assert read_entries(rootfs, "/etc/passwd") == []
    with pytest.raises(UserError, match="unable to find user evil"):
        resolve_user(rootfs, "evil")
    with pytest.raises(UserError, match="unable to find group evilgroup"):
        resolve_user(rootfs, "0:evilgroup")


def test_a_symlinked_passwd_resolves_inside_the_rootfs(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "lib").mkdir()
    (rootfs / "lib/passwd").write_text("app:x:1000:1000::/:/bin/sh\n")
    os.symlink("/lib/passwd", rootfs / "etc/passwd")
    assert resolve_user(rootfs, "app") == (1000, 1000, [1000])


def test_short_lines_are_tolerated(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc/passwd").write_text("junk\nshort:x:1000\nempty:x:1001:\n")
    (rootfs / "etc/group").write_text("staff:x:50\nwheel:x:10:short\n")
    assert resolve_user(rootfs, "short") == (1000, 0, [0, 10])
    assert resolve_user(rootfs, "1001") == (1001, 0, [0])
    assert resolve_user(rootfs, "short:staff") == (1000, 50, [50])


def test_users_by_name_number_and_group(tmp_path: Path) -> None:
    """As BuildKit resolves a process's user before running it (the engine does, for every
    worker): supplementary groups include the primary one and every group naming the user."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\nbob:x:1000:\nwheel:x:10:bob\ndocker:x:999:alice,bob\n")
    assert resolve_user(tmp_path, "") == (0, 0, [0])
    assert resolve_user(tmp_path, "bob") == (1000, 1000, [1000, 10, 999])
    assert resolve_user(tmp_path, "1000") == (1000, 1000, [1000, 10, 999])
    assert resolve_user(tmp_path, "bob:wheel") == (1000, 10, [10])
    assert resolve_user(tmp_path, "4242:4343") == (4242, 4343, [4343])
    with pytest.raises(UserError, match="unable to find user carol"):
        resolve_user(tmp_path, "carol")
    with pytest.raises(UserError, match="unable to find group nogroup"):
        resolve_user(tmp_path, "bob:nogroup")


def test_no_user_is_root_with_its_groups(tmp_path: Path) -> None:
    """A step without USER runs as root in the primary group and every group listing root,
    as BuildKit resolves user ``0``; with no readable passwd file, in group 0 alone."""
    assert resolve_user(tmp_path, "") == (0, 0, [0])
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\nwheel:x:10:root\nbob:x:1000:\n")
    assert resolve_user(tmp_path, "") == (0, 0, [0, 10])
