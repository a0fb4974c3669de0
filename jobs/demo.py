"""``make demo``: the whole loop on the real SmolLM2-135M over part of the standard library.

1. ingest and extract the layer-15 residual stream into a local store (runs/demo);
2. train a small TopK SAE from the store (runs/demo-sae/topk-2048, SAELens format);
3. encode the stored activations with it and build its feature-major index;
4. print the top contexts of a frequent and two mid-density latents, firing token marked, and
   their token profiles (exact, kept with the index);
5. explain a mid-density one and the three latents most specific to asyncio (two) and to json
   (one) with the local SmolLM2-135M-Instruct and score that and their token profiles (embedding
   scorer, the LLM detection judge, each checked against a shuffled baseline), add one manual label, and
   search the explanations and by example;
6. contrast the asyncio modules with the json package: latents firing more in one, tested per
   context (json has five documents), with their labels and q-values.

Runs on the embedded default: a local Ray cluster and local folders. Running it again resumes:
finished steps are kept (delete runs/ to start over).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from actstore.api import open_store
from actstore.cli import main as cli
from actstore.config import TrainConfig, load_config
from actstore.query.render import render_examples

CONFIGS = Path(__file__).parent / "configs"
SAE_NAME = "topk-2048"
ASYNCIO, JSON = "source LIKE '%asyncio%'", "source LIKE '%json%'"


def _step(title: str, start: float) -> None:
    print(f"\n== {title} ({time.perf_counter() - start:.0f} s so far) ==", flush=True)


def main() -> int:
    start = time.perf_counter()
    _step("1. extract: SmolLM2-135M, blocks.15.hook_resid_post", start)
    if cli(["extract", str(CONFIGS / "demo.yaml"), "-q"]):
        return 1
    train = load_config(CONFIGS / "demo-sae.yaml", TrainConfig)
    _step("2. train a TopK SAE from the store", start)
    if not (Path(train.out) / "sae_weights.safetensors").exists():
        if cli(["train-sae", str(CONFIGS / "demo-sae.yaml"), "-q"]):
            return 1
    else:
        print(f"{train.out} exists; kept")
    _step("3. encode the stored activations with it, build the index", start)
    if not _indexed(train.store.url) and cli(["encode", train.store.url, "--sae", train.out, "--code-cap", "32", "--index", "-q"]):
        return 1
    latents = open_store(train.store.url).sae(SAE_NAME)
    density = latents.density()
    alive = density.filter(density["count"] > 0).sort("density", descending=True)
    print(f"{len(alive)} of {latents.info.d_sae} latents fire; densest {alive['density'][0]:.3f}, "
          f"median {float(np.median(alive['density'].to_numpy())):.4f}")
    chosen = [("most frequent", int(alive["latent"][0])),
              ("mid-density", int(alive["latent"][len(alive) // 2])),
              ("mid-density", int(alive["latent"][len(alive) // 2 + 1]))]
    for kind, latent in chosen:
        row = density.row(latent, named=True)
        _step(f"4. latent {latent} ({kind}: fires on {row['density']:.2%} of tokens, max {row['max']:.2f}), "
              "top 5 contexts, one per document, [[firing token]]", start)
        print(render_examples(latents.top_k(latent, k=5, window=10, per_doc=1), lead=("rank",)))
        print(f"$ actstore profile runs/demo --sae {SAE_NAME} --latent {latent} --top 3")
        cli(["profile", train.store.url, "--sae", SAE_NAME, "--latent", str(latent), "--top", "3"])
    ranked = latents.contrast(ASYNCIO, JSON).frame
    specific = [*ranked.filter(pl.col("log2_ratio") > 0).head(2)["latent"], *ranked.filter(pl.col("log2_ratio") < 0).head(1)["latent"]]
    mid = chosen[1][1]
    if _explain(train.store.url, [mid, *[latent for latent in specific if latent != mid]], start):
        return 1
    _step("6. contrast: which latents fire more in the asyncio modules than in the json package, and the reverse", start)
    print(f'$ actstore contrast runs/demo --sae {SAE_NAME} --a "{ASYNCIO}" --b "{JSON}" --top 10')
    if cli(["contrast", train.store.url, "--sae", SAE_NAME, "--a", ASYNCIO, "--b", JSON, "--top", "10"]):
        return 1
    print(f"\ndone in {time.perf_counter() - start:.0f} s. Try (after `source .venv/bin/activate`): actstore top runs/demo --sae {SAE_NAME} --latent {chosen[1][1]}")
    return 0


def _explain(url: str, ids: list[int], start: float) -> int:
    """Step 5: automatic explanations with scores, a manual label, and searches."""
    _step("5. explain a mid-density latent and the three most specific to asyncio or json (step 6) with "
          "SmolLM2-135M-Instruct, score that and their token profiles on held-out windows", start)
    if cli(["explain", url, "--sae", SAE_NAME, "--latents", ",".join(map(str, ids)),
            "--config", str(CONFIGS / "demo-explain.yaml"), "-q"]):
        return 1
    cli(["explanations", url, "--sae", SAE_NAME, "--current"])
    top = open_store(url).sae(SAE_NAME).top_k(ids[0], k=1, window=0)
    word = str(top["tokens"][0][top["focus"][0]]).strip() or "whitespace"
    _step(f"5. a manual label for latent {ids[0]} from its top token, then search", start)
    label = f"the word {word}"
    known = open_store(url).sae(SAE_NAME).explanations(latent=ids[0])
    if known.filter((pl.col("kind") == "human") & (pl.col("text") == label)).is_empty():  # a rerun keeps it once
        cli(["label", url, "--sae", SAE_NAME, "--latent", str(ids[0]), label, "--author", "demo"])
    else:
        print(f"latent {ids[0]} already has the label {label!r}; kept")
    print(f"$ actstore search runs/demo --sae {SAE_NAME} {word!r} --top 5")
    cli(["search", url, "--sae", SAE_NAME, word, "--top", "5"])
    print("\n$ actstore search runs/demo --sae topk-2048 --by-example ' await' --top 5")
    return cli(["search", url, "--sae", SAE_NAME, "--by-example", " await", "--top", "5"])


def _indexed(url: str) -> bool:
    from actstore.errors import ConfigError, IndexNotFoundError

    try:
        return open_store(url).sae(SAE_NAME).index.complete
    except (ConfigError, IndexNotFoundError):  # not encoded yet, or not indexed yet
        return False


if __name__ == "__main__":
    sys.exit(main())
