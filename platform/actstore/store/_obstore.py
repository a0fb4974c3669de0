"""zarr's ``ObjectStore`` over obstore (Rust object_store) for ``s3://`` locations.

The store's ``storage_options`` are written for fsspec/s3fs; this module maps the ones that say
where and how to connect (endpoint, region, anonymous access, explicit keys) onto obstore's S3
configuration. Credentials otherwise come from the standard AWS environment variables, which
obstore reads itself. Options that only tune s3fs are ignored.
"""

from __future__ import annotations

import os
from typing import Any

from zarr.abc.store import Store as StoreLike

from actstore.errors import ConfigError

__all__ = ["obstore_zarr_store"]


def _s3_config(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(S3 config, client options) for obstore from fsspec-style storage options."""
    client_kwargs = dict(options.get("client_kwargs") or {})
    config: dict[str, Any] = {}
    client: dict[str, Any] = {}
    endpoint = options.get("endpoint_url") or client_kwargs.get("endpoint_url")
    if endpoint:
        config["endpoint"] = endpoint
        client["allow_http"] = str(endpoint).startswith("http://")
    region = options.get("region_name") or client_kwargs.get("region_name") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        config["region"] = region
    if options.get("anon"):
        config["skip_signature"] = True
    for ours, theirs in (("key", "access_key_id"), ("secret", "secret_access_key"), ("token", "session_token")):
        if options.get(ours):
            config[theirs] = options[ours]
    return config, client


def obstore_zarr_store(url: str, storage_options: dict[str, Any], *, read_only: bool) -> StoreLike:
    """A zarr ``ObjectStore`` for an ``s3://bucket/prefix`` URL."""
    if not url.startswith("s3://"):
        raise ConfigError(f"the obstore backend serves s3:// stores only, not {url!r}; use backend fsspec")
    try:
        from obstore.store import S3Store
    except ImportError:
        raise ConfigError("the obstore backend needs the obstore package: pip install obstore") from None
    import zarr.storage

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    config, client = _s3_config(storage_options)
    store = S3Store(bucket, prefix=prefix.strip("/") or None, config=config, client_options=client)  # type: ignore[arg-type]
    return zarr.storage.ObjectStore(store, read_only=read_only)
