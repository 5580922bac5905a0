"""The hooks llbkit calls, for plugins that observe or adjust rather than being chosen by name.

Project name ``llbkit``; implementations register through the ``llbkit.hooks`` entry-point group
(the value is a module or object carrying ``@hookimpl`` functions). Hooks are synchronous and
must be cheap: anything doing I/O belongs in a driver. Grouped by the phase in which they fire.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from llbkit.core.plugins.progress import ProgressEvent

__all__ = ["PROJECT", "hookimpl", "hookspec", "llbkit_add_commands", "llbkit_on_progress"]

PROJECT = "llbkit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- command line -------------------------------------------------------------------------------


@hookspec
def llbkit_add_commands(cli: click.Group) -> None:
    """Add commands or groups to the ``llbkit`` command line.

    Fires once per CLI run, after the built-in commands are in place and before the arguments
    are parsed. A command whose name is already taken is refused with an error naming both.

    :param cli: the root ``llbkit`` group; call ``cli.add_command(...)``.
    """


# -- builds ---------------------------------------------------------------------------------------


@hookspec
def llbkit_on_progress(ref: str, event: ProgressEvent) -> None:
    """Observe one progress record of a build: a step's state (``Vertex``), a sub-task
    (``VertexStatus``), output (``VertexLog``) or a warning (``VertexWarning``).

    Fires for every record of every build, in order, from one consumer task per build; that
    task reads the build's status stream, so an observer that falls behind is fed from the
    journal rather than holding records back. It is called on the build's event loop: keep it
    quick and hand slow work (network, disk) to a thread or a queue. An exception is reported as a
    warning naming the plugin and otherwise ignored (the other observers still see the
    record): an observer cannot fail a build.

    :param ref: the build's ref, as ``Controller.status`` knows it.
    :param event: the record (frozen).
    """
