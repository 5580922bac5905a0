"""llbkit core: the LLB model, plugin contracts and discovery, the engine, its CLI and daemon."""

#: the distribution's version, kept here so that starting the CLI need not read metadata
#: (core/tests/test_cli.py checks it against the installed distribution's)
__version__ = "0.1.0"

__all__ = ["__version__"]
