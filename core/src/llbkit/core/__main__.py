"""``python -m llbkit.core`` runs the ``llbkit`` command."""

from llbkit.core.cli.main import run

run()
