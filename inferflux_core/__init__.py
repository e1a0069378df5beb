"""inferflux's core: hook specs, contracts, plugin loading, config, engine, API and CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("inferflux")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
