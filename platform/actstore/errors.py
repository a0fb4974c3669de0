"""The errors actstore raises.

Every error derives from :class:`ActstoreError` and also from the fitting built-in, so callers
can catch either (``except FileNotFoundError`` still works). Messages say what was wrong, what
was found, and what to do.
"""

from __future__ import annotations

__all__ = [
    "ActstoreError",
    "ConfigError",
    "CorpusError",
    "DecoderNotFoundError",
    "LiveNotAttachedError",
    "NotFoundError",
    "RequestError",
    "StorageAccessError",
    "StoreExistsError",
    "StoreMismatchError",
    "StoreNotFoundError",
    "TokenizerError",
    "UnitNotDoneError",
    "UnsupportedFormatError",
]


class ActstoreError(Exception):
    """Base class of every error actstore raises on purpose."""


class ConfigError(ActstoreError, ValueError):
    """A configuration is invalid or inconsistent (with itself, the model or the store)."""


class CorpusError(ActstoreError, ValueError):
    """A corpus file cannot be read as configured; the message names the file and line."""


class TokenizerError(ActstoreError, ValueError):
    """The tokenizer cannot be loaded or lacks a token the configuration needs."""


class StoreNotFoundError(ActstoreError, FileNotFoundError):
    """No actstore store exists at the given URL."""


class StoreExistsError(ActstoreError, FileExistsError):
    """A store already exists where a new one was to be created."""


class StoreMismatchError(ActstoreError, ValueError):
    """An existing store was made with different settings than the ones given now."""


class UnsupportedFormatError(ActstoreError, ValueError):
    """The store was written in a format version this actstore cannot read."""


class StorageAccessError(ActstoreError, PermissionError):
    """The storage location cannot be read or written (credentials, permissions, bucket)."""


class UnitNotDoneError(ActstoreError, LookupError):
    """A unit was read that has not been committed (its manifest does not exist)."""


class IndexNotFoundError(ActstoreError, LookupError):
    """A query needs an SAE's feature-major index, and it has not been built (or is incomplete)."""


class LogitsNotFoundError(ActstoreError, LookupError):
    """An SAE's output logits were asked for, and they have not been computed into the store."""


class DecoderNotFoundError(ActstoreError, LookupError):
    """An SAE's decoder weights cannot be loaded on this machine (its recorded files are not here)."""


class NotFoundError(ActstoreError, LookupError):
    """A name asked for (an SAE, a page) does not exist in the store; the message lists what does."""


class LiveNotAttachedError(NotFoundError):
    """The browser runs without a model (``actstore serve`` without ``--model``): live panels
    have nothing to compute with; the message says how to attach one."""


class RequestError(ActstoreError, ValueError):
    """A web or API request is malformed or asks for more than the server's limits allow."""
