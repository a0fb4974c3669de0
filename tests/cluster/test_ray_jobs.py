"""The job entrypoint through real Ray Jobs: `ray start --head` on loopback, `ray job submit`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import actstore
from tests.conftest import _free_port
from tests.helpers import write_tiny_job

pytestmark = pytest.mark.slow
REPO = Path(__file__).parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A separate Ray head on 127.0.0.1 in its own process group (stopped without `ray stop`,
    which would also stop the test session's cluster)."""
    temp = tmp_path_factory.mktemp("ray")
    port, dash = _free_port(), _free_port()
    # every agent port explicit: the test session's own cluster holds the default ones
    agents = [f"--{name}={_free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                        "metrics-export-port", "runtime-env-agent-port",
                                                        "ray-client-server-port", "node-manager-port",
                                                        "object-manager-port")]
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2", f"--temp-dir={temp}",
         "--include-dashboard=true", *agents],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dash}"
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{address}/api/version", timeout=1)
            break
        except OSError:
            assert head.poll() is None, "ray start failed"
            time.sleep(0.2)
    yield address, env
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)


def test_ray_job_submit_runs_extraction_and_refuses_duplicates(ray_head, tmp_path, tiny_tokenizer) -> None:
    address, env = ray_head
    config = write_tiny_job(tmp_path, tiny_tokenizer, store_url=str(tmp_path / "store"))
    run_id = subprocess.run([str(BIN / "actstore"), "run-id", str(config)], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert run_id.startswith("actstore-extract-")
    submit = [str(BIN / "ray"), "job", "submit", "--address", address, "--submission-id", run_id,
              "--working-dir", str(REPO), "--", "python", "jobs/extract.py", str(config)]
    for _ in range(60):  # the job agent starts a little after the dashboard answers
        first = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=400)
        if "No available agent" not in first.stdout + first.stderr:
            break
        time.sleep(1)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    logs = first.stdout + first.stderr
    assert "extract: 100%" in logs and "state       complete" in logs  # progress and the summary reach the job logs
    store = actstore.open(str(tmp_path / "store"))
    assert store.info().complete
    again = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "already exists" in (again.stdout + again.stderr)
