"""Walking and removing trees of any depth without Python recursion.

A context, a layer or what a ``RUN`` left may nest thousands of directories deep; Python's
recursion limit (and ``os.walk``, ``os.makedirs`` and ``shutil.rmtree``, recursive in 3.11)
fails at about a thousand. Walkers here keep their own stack instead.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Generator, Iterator

TYPE_CHECKING = False  # typing's import is a tenth of a daemon client's start
if TYPE_CHECKING:
    from typing import Any, TypeVar

__all__ = ["SortedWalk", "Steps", "makedirs", "rmtree", "run", "walk"]

#: A recursive walker written as a generator: it yields a child's ``Steps`` where it would
#: call itself and receives the child's result back.
if TYPE_CHECKING:
    T = TypeVar("T")
    Steps = Generator["Steps[Any]", Any, T]
else:
    Steps = Generator  # its parameters matter to the type checker alone


def run(top: Steps[T]) -> T:
    """Drive a generator-written recursion with an explicit stack; the result of ``top``.

    An exception in a child is thrown into its parent at the ``yield``, as a raise through a
    call would be, so ``with`` and ``try`` in a walker keep working.
    """
    stack: list[Steps[Any]] = [top]
    value: Any = None
    error: BaseException | None = None
    while True:
        gen = stack[-1]
        try:
            if error is not None:
                failed, error = error, None
                child = gen.throw(failed)
            else:
                child = gen.send(value)
        except StopIteration as done:
            stack.pop()
            if not stack:
                return done.value  # type: ignore[no-any-return]
            value = done.value
            continue
        except BaseException as exc:
            stack.pop()
            if not stack:
                raise
            error = exc
            continue
        stack.append(child)
        value = None


def walk(top: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(top)`` top-down, symlinks not followed, at any depth; a caller may prune
    ``dirnames`` in place as with ``os.walk``."""
    pending = [top]
    while pending:
        path = pending.pop()
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError:
            continue
        dirs = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
        files = [e.name for e in entries if not e.is_dir(follow_symlinks=False)]
        yield path, dirs, files
        pending.extend(os.path.join(path, d) for d in reversed(dirs))


class SortedWalk:
    """A tree depth first, each directory's names in the order given, without recursion:
    iterating yields each entry once as ``(absolute path, path relative to the root)``; the
    caller enters the directories it wants (:meth:`enter`, with their names) and may leave the
    rest of the current one (:meth:`leave`), as fsutil's walker decides entry by entry."""

    def __init__(self, root: str, names: list[str]) -> None:
        self._stack: list[tuple[str, str, Iterator[str]]] = [(root, "", iter(names))]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        stack = self._stack
        while stack:
            dir_abs, dir_rel, names = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                continue
            yield os.path.join(dir_abs, name), f"{dir_rel}/{name}" if dir_rel else name

    def enter(self, abspath: str, path: str, names: list[str]) -> None:
        """Walk the directory just yielded next, its entries ``names`` in that order."""
        self._stack.append((abspath, path, iter(names)))

    def leave(self) -> None:
        """Yield nothing more of the directory the entry just yielded is in."""
        self._stack.pop()


def makedirs(path: str, mode: int = 0o777) -> None:
    """``os.makedirs(path, exist_ok=True)`` without recursion."""
    missing: list[str] = []
    head = os.path.abspath(path)
    while not os.path.isdir(head):
        missing.append(head)
        parent = os.path.dirname(head)
        if parent == head:
            break
        head = parent
    for one in reversed(missing):
        try:
            os.mkdir(one, mode)
        except FileExistsError:
            if not os.path.isdir(one):
                raise


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def rmtree(path: str | os.PathLike[str], ignore_errors: bool = False) -> None:
    """``shutil.rmtree`` at any depth, even past PATH_MAX, holding one directory open at a time.

    Each directory is entered by name relative to its parent and left through ``..``, checked
    to be the parent it came from; symlinks are removed, never followed.
    """
    try:
        _rmtree(os.fspath(path))
    except OSError:
        if not ignore_errors:
            raise


def _rmtree(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    fd = os.open(path, _DIR_FLAGS)
    # One frame per directory entered: its (dev, ino), its name in its parent, names left.
    frames: list[tuple[tuple[int, int], str, list[str]]] = [
        ((st.st_dev, st.st_ino), path, os.listdir(fd))
    ]
    try:
        while frames:
            _, name, names = frames[-1]
            if names:
                child = names.pop()
                try:
                    os.unlink(child, dir_fd=fd)
                    continue
                except FileNotFoundError:
                    continue
                except IsADirectoryError:
                    pass
                inner = os.open(child, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = inner
                cst = os.fstat(fd)
                frames.append(((cst.st_dev, cst.st_ino), child, os.listdir(fd)))
                continue
            frames.pop()
            if not frames:
                break
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            pst = os.fstat(fd)
            if (pst.st_dev, pst.st_ino) != frames[-1][0]:
                raise OSError(f"{path}: a directory moved while it was being removed")
            os.rmdir(name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)


def call(walker: Callable[..., Steps[T]], *args: Any) -> T:
    """``run(walker(*args))``: a generator-written walker called as a function."""
    return run(walker(*args))
