"""What an ingestion or extraction checks before any work, each failing in one line.

- No placeholder bucket: the example configs (the one in the image, the RayJob's ``--store`` and
  ``--corpus``) carry ``s3://my-bucket/...``; a job still pointing there is refused, not sent to
  whoever owns that name on AWS.
- Every endpoint takes connections: the store's and the corpus's, probed once each with no
  retries (:func:`actstore.store._fs.probe_endpoint`), so a dead endpoint is reported in seconds.
- The store can be listed and written (:func:`actstore.store._fs.check_access`).
- A Ray Jobs submission id of actstore's form is this config's run id: a RayJob whose ``jobId``
  was computed for other arguments would let the same extraction run twice under two ids.
"""

from __future__ import annotations

import json
import os

from actstore.config import IngestConfig
from actstore.errors import ConfigError
from actstore.store._fs import Location, check_access, probe_endpoint

__all__ = ["PLACEHOLDER_BUCKETS", "placeholder_bucket", "preflight", "refuse_other_submission_id", "refuse_placeholders"]

# bucket names that example configs and docs use for "yours here" (compared case-insensitively)
PLACEHOLDER_BUCKETS = frozenset({"bucket", "my-bucket", "your-bucket", "example-bucket", "bucket-name", "my-bucket-name",
                                 "your-bucket-name", "replace-me", "change-me", "changeme"})
_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # Ray Jobs hands a driver its metadata (with the submission id) here


def placeholder_bucket(url: str) -> str | None:
    """The bucket of an object-store URL when it is a placeholder (a known example name, or one
    with template characters such as ``<bucket>`` or ``${BUCKET}``), else None."""
    if "://" not in url or url.startswith("file://"):
        return None
    bucket = url.split("://", 1)[1].split("/", 1)[0]
    if bucket.lower() in PLACEHOLDER_BUCKETS or any(c in bucket for c in "<>{}$"):
        return bucket
    return None


def refuse_placeholders(config: IngestConfig) -> None:
    """Refuse a store URL or corpus path whose bucket is a placeholder."""
    for what, url, flag in [("store.url", config.store.url, "--store URL"),
                            *(("corpus.paths", path, "--corpus GLOB") for path in config.corpus.paths)]:
        bucket = placeholder_bucket(url)
        if bucket is not None:
            raise ConfigError(f"{what} {url!r} names the placeholder bucket {bucket!r} of an example config; "
                              f"point it at your own ({flag}, or {what} in the config)")


def preflight(config: IngestConfig, location: Location) -> None:
    """Every check that needs no Ray and no model, before any work: placeholders, the endpoints
    of the corpus and the store, and access to the store at ``location``."""
    refuse_placeholders(config)
    for pattern in config.corpus.paths:
        probe_endpoint(Location(pattern, dict(config.corpus.storage_options)))
    check_access(location, write=True)


def refuse_other_submission_id(run_id: str) -> None:
    """Inside a Ray job: refuse a submission id of actstore's form (``actstore-extract-...``) that
    is not ``run_id``, the id of this job's config. Other ids (Ray's own ``raysubmit_...``, or
    names of the user's choosing) are left alone."""
    try:
        metadata = json.loads(os.environ.get(_JOB_CONFIG_ENV) or "{}").get("metadata") or {}
    except (json.JSONDecodeError, AttributeError):
        return
    submitted = str(metadata.get("job_submission_id") or "")
    prefix = run_id.rsplit("-", 1)[0] + "-"
    if submitted.startswith(prefix) and submitted != run_id:
        raise ConfigError(f"this job was submitted as {submitted!r}, but its config's run id is {run_id!r}: the id was "
                          "computed for other arguments; use `actstore run-id` with the job's own arguments "
                          "(infra/kuberay/rayjob.py writes a RayJob with both)")
