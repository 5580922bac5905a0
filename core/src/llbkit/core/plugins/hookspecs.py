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

    from llbkit.core.plugins.context import ProgressEvent

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
def llbkit_on_progress(event: ProgressEvent) -> None:
    """Observe one progress event of a build (a vertex started, a log line, a status update...).

    Fires for every event, in order, from a single consumer task, so a slow observer delays
    other observers but never the build. Exceptions are reported as warnings and otherwise
    ignored: an observer cannot fail a build.

    :param event: the event; treat it as read-only.
    """
