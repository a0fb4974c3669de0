"""``make demo``: extraction with SmolLM2 over part of the standard library, then what it made.

Runs on the embedded default: a local Ray cluster and a local store under runs/demo. Running it
again resumes (a complete store is left as it is).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from actstore.cli import main as cli
from actstore.store.stats import site_stats_path
from actstore.store.store import open_store

CONFIG = Path(__file__).parent / "configs" / "demo.yaml"


def main() -> int:
    start = time.perf_counter()
    status = cli(["extract", str(CONFIG)])
    if status:
        return status
    store = open_store("runs/demo")
    print(f"\n== statistics (BOS and padding excluded), {time.perf_counter() - start:.0f} s in all ==")
    for site in store.meta.sites:
        count = int(store.array(site_stats_path(site.name, "count", unit=False))[0])
        total = np.asarray(store.array(site_stats_path(site.name, "sum", unit=False))[:])
        sumsq = float(store.array(site_stats_path(site.name, "sumsq", unit=False))[0])
        acts = store.read(f"activations/{site.name}", slice(0, 1))[0].astype(np.float32)
        norms = np.linalg.norm(acts, axis=-1)
        print(f"{site.name}: {count:,} tokens, d={site.d}, mean squared norm {sumsq / count:,.1f}, "
              f"norm of the mean {np.linalg.norm(total / count):,.1f}")
        print(f"  context 0 norms: BOS {norms[0]:,.1f}, other tokens median {np.median(norms[1:]):,.1f} "
              "(BOS carries a massive norm, which is why statistics leave it out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
