"""Server time of the browser's explanation panels on an SAE whose every latent is explained.

``actstore explain`` commits a part every ``commit_every`` (8) results and every label is a part
of its own, so a fully explained 16,384-latent SAE has ~2,000 Parquet parts. The latents table
(sorted by score, filtered by label), a feature page's explanations and the latent search read
them; this times those answers against the same store with no explanations (the baseline
measured in the same run) and prints the ratio.

Run: ``.venv/bin/python benchmarks/bench_web_explanations.py [--latents 16384] [--labels 200]``
(a synthetic store of ~100k tokens is built in a temporary folder; a minute or two on 2 cores).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from actstore.api import Store
from actstore.explain.table import append_explanations
from actstore.web.app import create_app
from benchmarks.synthetic import make_store

SAE = "sae"
WORDS = ("dates", "numbers", "the future", "commas", "code", "names", "French", "verbs", "plurals", "quotes")


def explain_all(url: str, d_sae: int, labels: int, commit_every: int = 8) -> int:
    """Automatic explanations of every latent, ``commit_every`` per part as ``actstore explain``
    commits them, then ``labels`` labels (one part each); returns the number of parts."""
    store = Store.open(url, mode="r+")
    rows = [{"latent": i, "text": f"{WORDS[i % len(WORDS)]} in context {i}", "kind": "auto", "author": "smollm2",
             "parsed": True, "key": f"k{i}", "created": f"2026-11-23T10:00:{i % 60:02d}+00:00",
             "detection_balanced_accuracy": (i % 97) / 97, "fuzzing_balanced_accuracy": (i % 89) / 89}
            for i in range(d_sae)]
    for start in range(0, d_sae, commit_every):
        append_explanations(store, SAE, rows[start : start + commit_every])
    latents = store.sae(SAE)
    for i in range(labels):
        latents.label(i * 7 % d_sae, f"label {i} about {WORDS[i % len(WORDS)]}", author="bench")
    return -(-d_sae // commit_every) + labels


def timed(client, path: str, repeat: int) -> tuple[float, float]:
    """(first request, median of the next ``repeat``) in ms; fails on any error status."""
    times = []
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        r = client.get(path)
        times.append((time.perf_counter() - t0) * 1e3)
        if r.status_code != 200:
            raise SystemExit(f"{path}: HTTP {r.status_code}: {r.text[:300]}")
    return times[0], statistics.median(times[1:])


def main() -> None:
    from starlette.testclient import TestClient

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latents", type=int, default=16_384)
    parser.add_argument("--labels", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="actstore-bench-explanations-"))
    try:
        plain, explained = str(root / "plain"), str(root / "explained")
        make_store(plain, args.tokens, ctx_len=256, sae=(SAE, args.latents, 16, 32))
        shutil.copytree(plain, explained)
        t0 = time.perf_counter()
        parts = explain_all(explained, args.latents, args.labels)
        print(f"{args.latents:,} latents explained in {parts:,} parts + labels ({time.perf_counter() - t0:.0f} s to write)")
        paths = [("SAE table, by count", f"/api/sae/{SAE}"), ("SAE table, by score", f"/api/sae/{SAE}?sort=score"),
                 ("SAE table, label filter", f"/api/sae/{SAE}?label=future&sort=label"),
                 ("latent search (BM25)", "/api/search/latents?text=future+dates")]
        clients = {name: TestClient(create_app(url)) for name, url in (("plain", plain), ("explained", explained))}
        print(f"{'answer':<26} {'plain warm':>11} {'expl. cold':>11} {'expl. warm':>11} {'warm ratio':>11}")
        for label, path in paths:
            _, base = timed(clients["plain"], path, args.repeat)
            cold, warm = timed(clients["explained"], path, args.repeat)
            print(f"{label:<26} {base:11.0f} {cold:11.0f} {warm:11.0f} {warm / base:11.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
