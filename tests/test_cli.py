"""The command line's error paths as a user sees them: a separate process, stderr read to the end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def test_error_after_ray_started_is_the_last_line(tmp_path, tiny_tokenizer) -> None:
    """The corpus error comes from a Ray actor; Ray's shutdown messages must not follow it."""
    (tmp_path / "c.jsonl").write_text('{"text": "fine"}\n{"text": null}\n')
    config = tmp_path / "ingest.yaml"
    config.write_text(f"""
store: {{url: {tmp_path / "store"}}}
corpus: {{paths: ["{tmp_path / "c.jsonl"}"]}}
tokenizer: {{id: {tiny_tokenizer}}}
context: {{ctx_len: 16, contexts_per_unit: 2}}
ray: {{num_cpus: 1}}
""")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray, as a user's shell
    done = subprocess.run([str(BIN / "actstore"), "ingest", str(config), "-q"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.rstrip().splitlines()[-1] == (
        f"actstore ingest: error: {tmp_path / 'c.jsonl'}:2: text field 'text' is null; "
        "drop the record or give it a string")
    assert not (tmp_path / "store" / "_staging").exists()


def test_a_closed_pipe_ends_quietly(coded_store) -> None:
    """``actstore info STORE | head -1``: the reader leaves before the output is written."""
    proc = subprocess.Popen([str(BIN / "actstore"), "info", str(coded_store)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.close()  # long before the command has loaded and printed anything
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and err == "", err[-2000:]
