"""Storage failures in actstore's words.

botocore and s3fs report an unreachable endpoint, a missing bucket, refused credentials or a
denied write as long tracebacks whose last line rarely says which endpoint was asked. This
module turns such an exception into one :class:`StorageAccessError` line that names the store
URL, the endpoint actually used (and where that came from) and what to check. Credentials never
appear: only the endpoint and the names of the variables to look at are printed, and any
credential value that an underlying message might quote is masked.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, Protocol

from actstore.errors import StorageAccessError, StoreNotFoundError

__all__ = ["endpoint_of", "is_unreachable", "not_found", "storage_error", "translated"]

_NO_CONNECTION = {"EndpointConnectionError", "ClientConnectorError", "ConnectTimeoutError", "ConnectionRefusedError"}
_UNREACHABLE = _NO_CONNECTION | {"ServerDisconnectedError", "ClientConnectionError"}
_BAD_CREDENTIALS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "does not exist in our records",
                    "signature we calculated", "InvalidToken", "ExpiredToken", "security token")
_CREDENTIAL_HINT = ("check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or storage_options "
                    "key/secret) are the ones for this endpoint")


class Location(Protocol):
    """What is needed of a storage location (``actstore.store._fs.Location`` has it)."""

    @property
    def url(self) -> str: ...
    @property
    def storage_options(self) -> dict[str, Any]: ...
    @property
    def is_local(self) -> bool: ...
    def fs(self) -> tuple[Any, str]: ...


def endpoint_of(location: Location) -> str:
    """The endpoint a request to ``location`` goes to, and where that setting came from."""
    if location.is_local:
        return "the local filesystem"
    opts = location.storage_options
    configured = opts.get("endpoint_url") or (opts.get("client_kwargs") or {}).get("endpoint_url")
    if configured:
        return f"{configured} (storage_options)"
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(var):
            return f"{os.environ[var]} (from {var})"
    if location.url.startswith(("s3://", "s3a://")):
        return "AWS S3 (no endpoint set: neither AWS_ENDPOINT_URL nor storage_options.endpoint_url)"
    return f"the default endpoint of {location.url.split('://', 1)[0]}://"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _masked(text: str, location: Location) -> str:
    """``text`` with every credential-like storage option value replaced."""
    for key, value in location.storage_options.items():
        if key in ("key", "secret", "token", "password", "aws_access_key_id", "aws_secret_access_key") and value:
            text = text.replace(str(value), "<redacted>")
    for var in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if os.environ.get(var):
            text = text.replace(os.environ[var], "<redacted>")
    return text


def _bucket(location: Location) -> str:
    return location.url.split("://", 1)[-1].split("/", 1)[0]


def _missing_bucket(text: str) -> bool:
    return "NoSuchBucket" in text or "bucket does not exist" in text.lower()


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says that no server took the connection (refused, a name that does not
    resolve, no connection within the timeout), as opposed to a server that answered (an error
    status, or a connection it closed)."""
    chain = list(_chain(exc))
    text = " ".join(str(e) for e in chain)
    return bool({type(e).__name__ for e in chain} & _NO_CONNECTION) or "Could not connect" in text or "Cannot connect" in text


def storage_error(exc: BaseException, location: Location, *, writing: bool) -> StorageAccessError:
    """One line for a failed storage call on ``location``: what happened, where, what to check."""
    chain = list(_chain(exc))
    text = " ".join(str(e) for e in chain)
    names = {type(e).__name__ for e in chain}
    endpoint = f"endpoint {endpoint_of(location)}"
    if names & _UNREACHABLE or "Could not connect" in text or "Cannot connect" in text:
        what = (f"cannot reach the storage {endpoint}; check that the server runs and that "
                "AWS_ENDPOINT_URL or storage_options.endpoint_url points at it")
    elif "NoCredentialsError" in names or "Unable to locate credentials" in text:
        what = f"no storage credentials found for {endpoint}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
    elif any(marker in text for marker in _BAD_CREDENTIALS):
        what = f"access denied: {endpoint} refused the credentials; {_CREDENTIAL_HINT}"
    elif any(isinstance(e, PermissionError) for e in chain) or "AccessDenied" in text:
        action, needed = ("writing", ", s3:PutObject, s3:DeleteObject") if writing else ("reading", "")
        what = (f"access denied: {action} is not allowed at {endpoint}; check the bucket policy and what "
                f"these credentials may do (s3:ListBucket, s3:GetObject{needed})")
    elif _missing_bucket(text):
        what = f"bucket {_bucket(location)!r} does not exist at {endpoint}; create it, or fix the store URL or the endpoint"
    else:
        first = _masked(str(exc).splitlines()[0] if str(exc) else "", location)
        what = f"storage error at {endpoint}: {type(exc).__name__}: {first}"
    return StorageAccessError(f"{location.url}: {what}")


@contextlib.contextmanager
def translated(location: Location, *, writing: bool) -> Iterator[None]:
    """Raise storage failures inside the block as :func:`storage_error` (actstore's own errors pass)."""
    try:
        yield
    except StorageAccessError:
        raise
    except Exception as exc:
        if type(exc).__module__.startswith("actstore") or not (isinstance(exc, OSError) or _is_storage_client_error(exc)):
            raise
        if isinstance(exc, FileNotFoundError) and (location.is_local or not _missing_bucket(str(exc))):
            raise  # a missing path or key, not a bucket: the caller says what it was looking for
        raise storage_error(exc, location, writing=writing) from None


def _is_storage_client_error(exc: BaseException) -> bool:
    """botocore/aiohttp errors that s3fs lets through untranslated."""
    module: Any = type(exc).__module__
    return str(module).split(".", 1)[0] in ("botocore", "aiobotocore", "aiohttp", "s3fs")


def not_found(location: Location, message: str) -> Exception:
    """The error for nothing found at ``location``: a missing bucket said as such (one more
    request, on this failure path only: object stores answer a missing bucket and a missing key
    alike to a read), else ``StoreNotFoundError(message)``."""
    if not location.is_local:
        try:
            with translated(location, writing=False):
                fs, root = location.fs()
                fs.ls(root.split("/", 1)[0], detail=False)
        except StorageAccessError as exc:
            return exc
        except FileNotFoundError as exc:
            return storage_error(exc, location, writing=False)
    return StoreNotFoundError(message)
