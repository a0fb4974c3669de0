"""The live session on the demo store (SmolLM2-135M, the demo's TopK SAE): latency of
``features()`` on 128 tokens, of a 64-token steered generation against a plain 64-token
generation measured in the same run (ratio), and a strength sweep of one latent.

Needs ``make demo`` first (runs/demo with the topk-2048 SAE).
Run: ``.venv/bin/python benchmarks/bench_live.py [--device cpu|cuda] [--latent L] [--repeats N]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).parents[1]))

from actstore.live import open_session
from actstore.live.steering import Sampling, generate
from actstore.store.layout import token_array

STORE, SAE = "runs/demo", "topk-2048"
PROMPT = "import asyncio\n\nasync def main():\n    loop = asyncio.get_running_loop()\n"


def _time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--latent", type=int, help="latent to sweep (default: one firing on the prompt)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not Path(STORE).exists():
        print(f"bench_live: {STORE} does not exist; run `make demo` first")
        return 1
    start = time.perf_counter()
    session = open_session(STORE, device=args.device)
    print(f"session loaded in {time.perf_counter() - start:.1f} s on {session.device}")
    ids = session.store.read(token_array("ids"), slice(7, 8))[0].tolist()  # a stored context: 128 tokens
    session.features(ids)  # warm-up
    t_features = _time(lambda: session.features(ids, top=10), args.repeats)
    print(f"features() on {len(ids)} tokens: {t_features * 1000:.0f} ms (median of {args.repeats})")

    first = session.features(PROMPT, top=1, max_density=0.05).sort("value", descending=True)
    latent = args.latent if args.latent is not None else int(first["latent"][0])
    prompt_ids = session.tokenize(PROMPT)
    sampling = Sampling(0.5, 1.0, 16, 64)
    t_plain = _time(lambda: generate(session.model, prompt_ids, sampling, suppress=session.suppress), args.repeats)
    t_steer = _time(lambda: session.steer(PROMPT, [(SAE, latent, 4.0)], unit="max", max_new_tokens=64), args.repeats)
    print(f"64-token generation: plain {t_plain:.2f} s; steer() {t_steer:.2f} s (default + steered generation "
          f"and two recording passes) = {t_steer / t_plain:.2f}x plain")
    strengths = [0.0, 1.0, 2.0, 4.0, 8.0, 16.0]
    frame = session.sweep(PROMPT, (SAE, latent, 0.0), strengths=strengths, unit="max", max_new_tokens=32)
    with pl.Config(tbl_rows=20, fmt_str_lengths=60, tbl_width_chars=160):
        print(f"sweep of latent {latent} (unit=max: strength x its store maximum "
              f"{float(session.saes[SAE].stats.max[latent]):.4g}), 32 new tokens, seed 16:")
        print(frame.with_columns(pl.col("text").str.replace_all("\n", "\\n", literal=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
