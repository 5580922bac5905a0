"""The ``llbkit`` command line: the composition root that wires plugins to commands."""
