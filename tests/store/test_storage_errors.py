"""Storage failures read as actstore's own one-line errors, against a real S3 API server:
stopped, bucket absent, credentials refused, write denied by policy. The secret never shows."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from actstore.errors import StorageAccessError
from actstore.store._fs import Location, check_access
from tests.conftest import _free_port, start_moto

SECRET = "s3cr3t-never-printed"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def auth_server() -> Iterator[tuple[str, dict[str, str]]]:
    """An S3 API server that checks credentials, with a user allowed to list and read only."""
    import boto3

    proc, endpoint = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "4"})  # the 4 set-up calls below
    try:
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
        iam.create_user(UserName="reader")
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            # s3:ListBucket is what AWS checks for a listing; moto 5.2.6 checks the operation's own
            # name (s3:ListObjectsV2), so the reader gets both, and still no s3:PutObject
            "Statement": [{"Effect": "Allow", "Action": ["s3:ListBucket", "s3:ListObjectsV2", "s3:GetObject"],
                           "Resource": "*"}]}))
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="data")
        yield endpoint, {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        proc.terminate()
        proc.wait(10)


def _error(location: Location, *, write: bool = True) -> str:
    with pytest.raises(StorageAccessError) as err:
        check_access(location, write=write)
    message = str(err.value)
    assert "\n" not in message and SECRET not in message and err.value.__cause__ is None
    return message


def _requests_sent(caplog: pytest.LogCaptureFixture) -> int:
    """HTTP requests botocore sent (one debug line each, retries included)."""
    return sum(r.name == "botocore.endpoint" and r.getMessage().startswith("Sending http request") for r in caplog.records)


def test_unreachable_endpoint_fails_at_start_after_one_request(caplog, tmp_path) -> None:
    """Nothing listens at the endpoint: starting a job, or opening a store, fails after a single
    request (no retries by actstore, s3fs or botocore) with actstore's line. With the default
    client settings this took ~10 s (a job) and ~75 s (opening a store) of retries before."""
    from actstore.api import open_store
    from actstore.cluster.preflight import preflight
    from actstore.config import IngestConfig
    from actstore.store._retry import retries_so_far

    endpoint = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    expected = (f"s3://data/run: cannot reach the storage endpoint {endpoint} (storage_options); check that the server "
                "runs and that AWS_ENDPOINT_URL or storage_options.endpoint_url points at it")
    caplog.set_level(logging.DEBUG, logger="botocore.endpoint")
    retries, start = retries_so_far(), time.perf_counter()
    assert _error(Location("s3://data/run", {"endpoint_url": endpoint})) == expected
    with pytest.raises(StorageAccessError) as err:
        open_store("s3://data/run", storage_options={"endpoint_url": endpoint})
    assert str(err.value) == expected
    elapsed = time.perf_counter() - start
    assert _requests_sent(caplog) == 2 and retries_so_far() == retries  # one request each, nothing retried

    # a corpus on a dead endpoint stops an ingestion before anything is written
    config = IngestConfig.model_validate({"store": {"url": str(tmp_path / "store")}, "tokenizer": {"id": "unused"},
                                          "corpus": {"paths": ["s3://data/corpus/*.jsonl"],
                                                     "storage_options": {"endpoint_url": endpoint}}})
    with pytest.raises(StorageAccessError, match=r"^s3://data/corpus/\*\.jsonl: cannot reach the storage endpoint"):
        preflight(config, Location(config.store.url))  # what run_ingest and run_extract do first
    assert _requests_sent(caplog) == 3 and not (tmp_path / "store").exists()
    print(f"\n[figure] dead endpoint: check_access + open_store failed in {elapsed:.2f} s, one request each")


def test_connection_errors_mid_run_are_retried(s3_endpoint, s3_bucket) -> None:
    """Once a job has started (its start-up checks passed), the endpoint going away for a while
    (open connections dropped, new ones refused, as when the server restarts) costs retries, not
    the job: a read of a Zarr array through actstore's store still returns the array."""
    import zarr

    from actstore.store._retry import retries_so_far
    from tests.s3proxy import FlakyProxy

    data = np.arange(4096, dtype=np.int32).reshape(64, 64)
    with FlakyProxy(s3_endpoint, every=0, reset_every=0) as proxy:
        # botocore's own retries off (s3fs does not retry a refused connection): actstore's layer must
        opts = {"endpoint_url": proxy.endpoint, "config_kwargs": {"retries": {"total_max_attempts": 1}}}
        location = Location(f"s3://{s3_bucket}/run", opts)
        check_access(location, write=True)  # start-up
        zarr.create_array(location.zarr_store(), name="a", shape=data.shape, chunks=(16, 64), dtype=data.dtype)[...] = data
        retries = retries_so_far()
        proxy.outage(1.0)
        assert np.array_equal(zarr.open_array(location.zarr_store(read_only=True), path="a")[...], data)
        assert retries_so_far() > retries


def test_missing_bucket_names_the_endpoint_from_the_environment(s3_endpoint, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    assert _error(Location("s3://no-such-bucket/run")) == (
        f"s3://no-such-bucket/run: bucket 'no-such-bucket' does not exist at endpoint {s3_endpoint} "
        "(from AWS_ENDPOINT_URL); create it, or fix the store URL or the endpoint")


def test_wrong_credentials(auth_server) -> None:
    endpoint, _ = auth_server
    message = _error(Location("s3://data/run", {"endpoint_url": endpoint, "key": "AKIAWRONG", "secret": SECRET}))
    assert message.startswith(f"s3://data/run: access denied: endpoint {endpoint} (storage_options) refused the "
                              "credentials; check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")


def test_denied_write_but_allowed_read(auth_server) -> None:
    endpoint, key = auth_server
    location = Location("s3://data/run", {"endpoint_url": endpoint, **key})
    check_access(location, write=False)  # reading is allowed
    message = _error(location)
    assert message.startswith(f"s3://data/run: access denied: writing is not allowed at endpoint {endpoint}")
    assert "s3:PutObject" in message and key["secret"] not in message


def test_cli_prints_one_line_and_no_traceback(s3_endpoint) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=s3_endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY=SECRET,
               AWS_DEFAULT_REGION="us-east-1")
    done = subprocess.run([str(BIN / "actstore"), "info", "s3://no-such-bucket/run"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr and SECRET not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"actstore info: error: s3://no-such-bucket/run: bucket 'no-such-bucket' does not exist at endpoint "
        f"{s3_endpoint} (from AWS_ENDPOINT_URL); create it, or fix the store URL or the endpoint")


def test_existing_bucket_without_a_store_is_not_called_a_missing_bucket(s3_endpoint, s3_bucket) -> None:
    from actstore.api import open_store
    from actstore.errors import StoreNotFoundError

    with pytest.raises(StoreNotFoundError, match=f"no actstore store at 's3://{s3_bucket}/nothing'"):
        open_store(f"s3://{s3_bucket}/nothing", storage_options={"endpoint_url": s3_endpoint})
