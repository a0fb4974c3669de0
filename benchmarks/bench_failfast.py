"""A dead storage endpoint: seconds until actstore's one-line error, with the start-up probe (now)
and without it (before: the retries of a running job, which a start-up does not need).

Nothing listens at the endpoint (a closed loopback port). Timed: ``check_access`` (what an
ingestion or extraction does first) and ``Store.open`` (``actstore info``, ``actstore.open``, the
web server). "Before" is the same call with the probe off (``probe_endpoint`` skipped,
``Store.open(probe=False)``, as workers of a running job open stores), default client settings.

Run: ``.venv/bin/python benchmarks/bench_failfast.py`` (about a minute and a half: the "before" open)
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

from actstore.errors import StorageAccessError
from actstore.store import _fs
from actstore.store._fs import Location, check_access
from actstore.store.store import Store


def _seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    try:
        call()
    except StorageAccessError as exc:
        assert "cannot reach the storage endpoint" in str(exc), exc
    else:
        raise AssertionError("the call did not fail")
    return time.perf_counter() - start


def main() -> None:
    for var, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(var, value)  # dummy credentials: the requests never reach a server
    logging.getLogger("actstore.store._retry").setLevel(logging.ERROR)  # the "before" side's retry lines
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed when the block ends: nothing listens
    location = Location("s3://data/run", {"endpoint_url": endpoint})
    now = {"check_access": _seconds(lambda: check_access(location, write=True)),
           "Store.open": _seconds(lambda: Store.open(location.url, storage_options=location.storage_options))}
    probe, _fs.probe_endpoint = _fs.probe_endpoint, lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        before = {"check_access": _seconds(lambda: check_access(location, write=True)),
                  "Store.open": _seconds(lambda: Store.open(location.url, storage_options=location.storage_options,
                                                            probe=False))}
    finally:
        _fs.probe_endpoint = probe  # type: ignore[assignment]
    for name in now:
        print(f"{name:<13} now {now[name]:6.2f} s   before {before[name]:6.2f} s")
    print(f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
