"""The cyclic garbage collector around the ``llbkit`` command's start.

Start-up imports make a few hundred thousand objects (modules, classes, functions) that live as
long as the process, and none of them is garbage; yet every full collection walks them all,
and start-up's and a build's allocations set off several: about 20 ms of a warm one-file
rebuild. So the command starts with the collector off; when the build is about to run, what
exists is frozen (collections no longer walk it) and the collector is turned back on for what
the build makes, so a long build's garbage is still collected. Only the ``llbkit`` command does
this; a program that imports llbkit is left as it is.
"""

from __future__ import annotations

import gc

__all__ = ["pause", "resume"]

#: set while this module holds the collector off (one that was off already is left off)
_PAUSED: set[bool] = set()


def pause() -> None:
    """Off for the start (the command's first step)."""
    if gc.isenabled():
        gc.disable()
        _PAUSED.add(True)


def resume() -> None:
    """Start-up is over: keep what it made out of every collection, and collect again."""
    if _PAUSED:
        _PAUSED.clear()
        gc.freeze()
        gc.enable()
