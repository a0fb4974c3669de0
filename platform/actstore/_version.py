"""The installed actstore version, read once from package metadata."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("actstore")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
