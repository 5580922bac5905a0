"""``python -m llbkit.core`` runs the ``llbkit`` command."""

from llbkit.core.cli.entry import run

run()
