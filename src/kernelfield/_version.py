"""The installed version of kernelfield, read once from the package metadata (pyproject.toml)."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("kernelfield")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
