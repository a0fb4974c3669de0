"""Server time of the feature browser's pages on a demo-sized store and on the 10M-token
benchmark store (``bench_index.py``'s synthetic store: 16,384 latents, L0 ~60, Zipf latent
frequencies, ~600M indexed occurrences).

Each page is requested in-process through Starlette's test client (no network): the first
request of a fresh app (cold: arrays opened, tokenizer loaded), then the median of requests
for latents opened for the first time (new: what a researcher clicking through waits) and of
``--repeat`` requests of a page seen before (again). The feature page is timed for latents at
several percentiles of frequency, since its cost grows with the latent's occurrences (quantile
groups read its whole posting list); co-firing reads the codes of its strongest occurrences.
Also printed: the JSON answer of other new latents. Goal: a new feature page under 300 ms on
the 10M store.

Run: ``.venv/bin/python benchmarks/bench_web.py [--bench-store DIR] [--demo-store runs/demo]``
(``--bench-store`` is ``bench_index.py --keep DIR``'s folder; without it the store is built,
which takes ~8 minutes on 2 cores). The synthetic store has no tokenizer; a word-level one with
its 50,000 ids is written beside it and recorded in its metadata.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))

from actstore.api import Store
from actstore.web.app import create_app
from benchmarks.synthetic import scratch

PERCENTILES = (0.5, 0.9, 0.99)


def synthetic_tokenizer(store: Store, folder: Path) -> None:
    """A word-level tokenizer covering the synthetic ids (w3 ... w49999), recorded in the store."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<bos>": 1, "<eos>": 2, **{f"w{i}": i for i in range(3, store.meta.tokenizer.vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<eos>",
                            unk_token="<unk>").save_pretrained(folder)
    info = store.meta.tokenizer.model_copy(update={"source": {"id": str(folder)}, "name_or_path": str(folder)})
    store.update_meta(tokenizer=info)


def bench_store(folder: Path | None) -> str:
    """The 10M-token benchmark store (built when ``folder`` holds none), with a loadable tokenizer."""
    root = folder or scratch("bench-web")
    url = str(root / "store")
    if not Path(url).exists():
        import ray

        from actstore.cluster.index import run_index
        from benchmarks.bench_index import CAP, CTX_LEN, SAE
        from benchmarks.synthetic import make_store

        make_store(url, 10_000_000, ctx_len=CTX_LEN, sae=(SAE, 16_384, 60, CAP))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        run_index(url, SAE, progress=True)
        ray.shutdown()
    store = Store.open(url, mode="r+")
    if store.meta.tokenizer.source.get("id") == "synthetic":
        synthetic_tokenizer(store, root / "tokenizer")
    return url


def timed(client, paths: list[str], repeat: int) -> tuple[float, float, float]:
    """(first request of the fresh app, median first request of the other paths, median of
    ``repeat`` requests of the first path again) in ms; fails on any error status. The middle
    figure is the honest one for a feature page: a latent nobody opened yet, so nothing it
    reads is in any cache."""
    def one(path: str) -> float:
        t0 = time.perf_counter()
        r = client.get(path)
        if r.status_code != 200:
            raise SystemExit(f"{path}: HTTP {r.status_code}: {r.text[:300]}")
        return (time.perf_counter() - t0) * 1e3

    first = one(paths[0])
    fresh = [one(p) for p in paths[1:]] or [first]
    again = [one(paths[0]) for _ in range(repeat)]
    return first, statistics.median(fresh), statistics.median(again)


def report(name: str, url: str, repeat: int, fresh: int) -> None:
    from starlette.testclient import TestClient

    client = TestClient(create_app(url))
    store = Store.open(url)
    sae = store.meta.saes[0].name
    latents = store.sae(sae)
    counts = latents.counts()
    alive = np.flatnonzero(counts)
    order = alive[np.argsort(counts[alive], kind="stable")]
    print(f"\n== {name}: {url} ({store.meta.n_ctx * store.meta.ctx_len:,} token slots, SAE {sae} d_sae {len(counts):,}, "
          f"{int(counts.sum()):,} occurrences) ==")
    text = " ".join(latents.top_k(int(order[len(order) // 2]), k=1, window=1)["tokens"][0])
    pages = [("store", ["/"], ["/api/store"]), ("SAE table", [f"/sae/{sae}"], [f"/api/sae/{sae}"]),
             ("search", [f"/search?text={text}"], [f"/api/search?text={text}"])]
    for q in PERCENTILES:
        at = min(int(q * len(order)), len(order) - 1)
        near = [int(x) for x in order[max(at - fresh, 0) : at + fresh + 1 : 2]][: fresh + 1]  # distinct latents of like frequency
        pages.append((f"feature p{int(q * 100)} (~{counts[near[0]]:,} occ.)",
                      [f"/sae/{sae}/latent/{x}" for x in near[::2]], [f"/api/sae/{sae}/latent/{x}" for x in near[1::2]]))
    print(f"{'page':<32} {'cold ms':>8} {'new ms':>8} {'again ms':>9} {'JSON new':>9}")
    for label, page, api in pages:
        cold, new, again = timed(client, page, repeat)
        _, json_new, json_again = timed(client, api, repeat)
        json_new = json_new if len(api) > 1 else json_again
        print(f"{label:<32} {cold:8.0f} {new:8.0f} {again:9.0f} {json_new:9.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench-store", type=Path, help="folder of bench_index.py --keep (built when empty)")
    parser.add_argument("--demo-store", default="runs/demo", help="the demo's store (make demo)")
    parser.add_argument("--repeat", type=int, default=3, help="requests of a page opened before")
    parser.add_argument("--fresh", type=int, default=8, help="latents per percentile opened for the first time")
    args = parser.parse_args()
    if Path(args.demo_store).exists():
        report("demo store", args.demo_store, args.repeat, args.fresh)
    else:
        print(f"no demo store at {args.demo_store}: run `make demo` first to time it")
    report("10M-token benchmark store", bench_store(args.bench_store), args.repeat, args.fresh)
    print("\ngoal: a feature page under 300 ms on the 10M-token store, for a latent opened for the first time (new ms)")


if __name__ == "__main__":
    main()
