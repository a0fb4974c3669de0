"""Session fixtures: one local Ray cluster, one S3 API server (moto, in a subprocess), a tiny tokenizer."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import make_tiny_tokenizer

# Dummy credentials for the loopback S3 server; Ray workers inherit them from this process.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto(env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """A moto S3 server on 127.0.0.1 in its own process; returns it and its endpoint."""
    port = _free_port()
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            return proc, endpoint
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("moto_server did not start")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    proc, endpoint = start_moto()
    yield endpoint
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def s3_bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh bucket on the S3 server, named after the test."""
    import s3fs

    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50].strip("-")
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    fs.mkdir(name)
    yield name


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def coded_store(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Path, ray_cluster: None) -> Path:
    """A local store with codes of one SAE and its index (see tests/coded_store.py)."""
    from tests.coded_store import build_coded_store

    return build_coded_store(tmp_path_factory.mktemp("coded"), tiny_tokenizer)


@pytest.fixture(scope="session")
def planted_store(tmp_path_factory: pytest.TempPathFactory, ray_cluster: None) -> Path:
    """A store with planted codes over a multilingual, hostile corpus (see tests/planted_store.py)."""
    from tests.planted_store import build_planted_store

    return build_planted_store(tmp_path_factory.mktemp("planted"))
