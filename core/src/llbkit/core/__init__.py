"""llbkit core: the LLB model, plugin contracts and discovery, and (later) the engine."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llbkit-core")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
