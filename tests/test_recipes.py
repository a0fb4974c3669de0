"""Docs as tests: the commands that `infra/local-cluster.sh` prints and the README's resubmission
block, extracted from the files and run verbatim, in a shell without the venv on PATH and without
AWS variables (only what the recipe itself sets).

The sequence is the one a user walks: start the local cluster; the printed commands submit an
extraction that fails (the test removed the bucket: a real failure, after the job has started);
the bucket comes back; the README's block deletes the failed job and submits again under the same
id, and the run completes. The printed config is a tiny model (``CONFIG``, a documented setting of
the script), so the run takes seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import actstore
from tests.conftest import _free_port
from tests.helpers import write_tiny_job

pytestmark = pytest.mark.slow
REPO = Path(__file__).parents[1]
VENV_BIN = str(Path(sys.executable).parent)


def _clean_env(state: Path, config: Path) -> dict[str, str]:
    """No venv on PATH, no AWS or Ray variables: what a fresh shell has, plus the script's settings."""
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p and ".venv" not in p and p != VENV_BIN)
    agents = " ".join(f"--{name}={_free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port",
        "ray-client-server-port", "node-manager-port", "object-manager-port"))  # the test session's Ray holds the defaults
    return {"PATH": path, "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8", "STATE": str(state),
            "CONFIG": str(config), "STORE_URL": "s3://actstore/recipe", "RAY_PORT": str(_free_port()),
            "DASHBOARD_PORT": str(_free_port()), "S3_PORT": str(_free_port()),
            "RAY_START_ARGS": f"{agents} --temp-dir={tempfile.mkdtemp(prefix='ray', dir='/tmp')}"}  # short: socket paths


def _printed_commands(stdout: str) -> list[str]:
    """The indented block after "in any shell:" in the script's output."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith("in any shell:")) + 1
    block = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        block.append(line.strip())
    return block


def _readme_block(marker: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    match = re.search(rf"<!-- {marker}:.*?-->\n```bash\n(.*?)```", text, re.S)
    assert match, f"README.md has no block marked {marker!r}"
    return [line for line in match.group(1).splitlines() if line.strip()]


def _shell(lines: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", "\n".join(lines)], env=env, cwd="/", capture_output=True, text=True,
                          timeout=400)


@pytest.mark.timeout(600)  # a head, an S3 server and two jobs in fresh processes: ~1-2 min on an idle 2-core machine
def test_local_cluster_recipe_and_resubmission_after_failure(tmp_path, tiny_tokenizer) -> None:
    config = write_tiny_job(tmp_path, tiny_tokenizer, store_url="runs/never-used")
    env = _clean_env(tmp_path / "state", config)
    script = str(REPO / "infra" / "local-cluster.sh")
    try:
        started = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=300)
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        printed = _printed_commands(started.stdout)
        assert any(line.startswith(".venv/bin/ray job submit") for line in printed), printed
        endpoint = f"http://127.0.0.1:{env['S3_PORT']}"
        storage = {"endpoint_url": endpoint, "key": "local", "secret": "local"}
        import s3fs

        s3 = s3fs.S3FileSystem(skip_instance_cache=True, **storage)
        s3.rmdir("actstore")  # a real failure for the first submission

        first = _shell(printed, env)
        out = first.stdout + first.stderr
        assert first.returncode != 0 and "No module named" not in out, out[-3000:]
        # the job ran actstore with the endpoint from its runtime env, and said what was wrong
        assert (f"actstore extract: error: s3://actstore/recipe: bucket 'actstore' does not exist at endpoint "
                f"{endpoint} (from AWS_ENDPOINT_URL)") in out, out[-3000:]

        s3.mkdir("actstore")
        again = _shell([line for line in printed if not line.startswith(".venv/bin/ray job submit")]
                       + _readme_block("resubmit"), env)
        out = again.stdout + again.stderr
        assert again.returncode == 0, out[-3000:]
        assert "state       complete" in out and "actstore-extract-" in out
        assert actstore.open("s3://actstore/recipe", storage_options=storage).info().complete
    finally:
        subprocess.run(["bash", script, "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(env["RAY_START_ARGS"].rsplit("--temp-dir=", 1)[1], ignore_errors=True)
