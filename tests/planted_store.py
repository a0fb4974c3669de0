"""A tiny store whose right answers are known: tokens ingested for real from a corpus holding
CJK, emoji, combining marks, right-to-left scripts, terminal escapes and a right-to-left
override, through a byte-level BPE tokenizer (so characters split over tokens); SAE codes
planted by hand; statistics and index built by actstore's own code.

Planted latents (``PLANTED`` SAE, 12 latents, decoder weights in a Gemma Scope params.npz):
- ``AWAIT`` fires on the last token of every " await", at a middling value for itself (it also
  fires on 4% of other tokens, higher and lower);
- ``LUCKY`` fires very high (its maximum) on two of those places only, low elsewhere: what a
  ranking by the best single place puts first;
- ``ALWAYS`` fires on 90% of tokens;
- ``PAIR_A`` fires on a random 10% of tokens, ``PAIR_B`` on half of those and a few others;
- ``SPLIT`` fires on the first token of every character split over two tokens;
- ``TWIN_A`` and ``TWIN_B`` have nearly the same decoder direction (cosine ~0.99).
``AWAIT`` is labelled "the keyword await"; ``ALWAYS`` carries a hostile label (a right-to-left
override before "evil.exe", a terminal escape) by an author whose name holds an override too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.helpers import write_jsonl

PLANTED = "planted"
D_SAE, CAP, D_IN = 12, 8, 16
AWAIT, LUCKY, ALWAYS, PAIR_A, PAIR_B, SPLIT, TWIN_A, TWIN_B = range(8)
RLO_LABEL = "\u202eevil.exe"  # shows as "exe.live" unless the override is neutralised
TEXTS = [
    "async def fetch(url):\n    data = await get(url)\n    return await parse(data)\n",
    "async def main():\n    await asyncio.sleep(1)\n    result = await fetch('x')\n",
    "日本語のテキストです。漢字とひらがなが混ざっています。東京は大きな都市です。",
    "中文文本测试，包含一些汉字。我们喜欢写代码。",
    "emoji 🐍 python 🎉 party 👩‍💻 coder 🇯🇵 flag",
    "combining marks: cafe\u0301 nai\u0308ve ñ and Zalgo z\u0335\u0321a\u0336l\u0337",
    "עברית: שלום עולם, זה טקסט מימין לשמאל",
    "العربية: مرحبا بالعالم، هذا نص من اليمين إلى اليسار",
    "terminal: \x1b[31mred\x1b[0m bell\x07 and an override \u202eevil.exe\u202c done",
    "mixed: await 東京 🐍 שלום await end",
]


def byte_level_tokenizer(folder: Path, texts: list[str]) -> Path:
    """A small byte-level BPE tokenizer (256 byte tokens + ~90 merges), so characters outside
    ASCII split over several tokens; specials pad 0, eos 1, bos 2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=350, special_tokens=["<pad>", "<eos>", "<bos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>").save_pretrained(folder)
    return folder


def build_planted_store(root: Path) -> Path:
    """Ingest the corpus, plant the codes, merge the statistics, build the index; the store's path."""
    import actstore
    from actstore.cluster.index import run_index
    from actstore.cluster.ingest import run_ingest
    from actstore.config import IngestConfig

    texts = [t for t in TEXTS for _ in range(3)]
    write_jsonl(root / "corpus.jsonl", [{"text": t, "id": f"doc-{i}"} for i, t in enumerate(texts)])
    tokenizer = byte_level_tokenizer(root / "tokenizer", TEXTS)
    config = IngestConfig.model_validate({
        "store": {"url": str(root / "store")},
        "corpus": {"paths": [str(root / "corpus.jsonl")], "key_field": "id"},
        "tokenizer": {"id": str(tokenizer)}, "context": {"ctx_len": 32, "contexts_per_unit": 16}})
    store = run_ingest(config)
    _plant(store, _params(root / "sae" / "params.npz"))
    run_index(store.location.url, PLANTED)
    latents = actstore.open(store.location.url).sae(PLANTED)
    latents.label(AWAIT, "the keyword await", author="ann")
    latents.label(ALWAYS, RLO_LABEL + " \x1b[2J", author="mallory\u202e")  # a bidi override and a terminal escape
    return Path(store.location.url)


def _params(path: Path) -> Path:
    """A Gemma Scope params.npz whose TWIN latents share a direction."""
    rng = np.random.default_rng(3)
    W_dec = rng.normal(size=(D_SAE, D_IN)).astype(np.float32)
    W_dec[TWIN_B] = W_dec[TWIN_A] + 0.1 * rng.normal(size=D_IN).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, W_enc=W_dec.T.copy(), W_dec=W_dec, b_enc=np.zeros(D_SAE, np.float32), b_dec=np.zeros(D_IN, np.float32),
             threshold=np.full(D_SAE, 0.01, np.float32))
    return path


def planted_values(ids: np.ndarray, counted: np.ndarray, split: np.ndarray, await_ids: list[int]) -> np.ndarray:
    """Dense planted codes [tokens, D_SAE] for flat token ``ids`` (0 where not ``counted``);
    ``split``: tokens that end inside a character."""
    rng = np.random.default_rng(0)
    n = ids.size
    dense = np.zeros((n, D_SAE), np.float32)
    m = len(await_ids)
    ends = np.flatnonzero([ids[i - m + 1 : i + 1].tolist() == await_ids for i in range(n)])
    other = rng.random(n) < 0.04
    dense[other, AWAIT] = rng.uniform(0.1, 2.0, n)[other]
    dense[ends, AWAIT] = 1.0
    dense[rng.random(n) < 0.05, LUCKY] = 0.2
    dense[ends[:2], LUCKY] = 5.0
    always = rng.random(n) < 0.9
    dense[always, ALWAYS] = rng.uniform(0.5, 1.0, n)[always]
    pair = rng.random(n) < 0.1
    dense[pair, PAIR_A] = 0.5
    dense[(pair & (rng.random(n) < 0.5)) | (rng.random(n) < 0.02), PAIR_B] = 0.7
    dense[split, SPLIT] = 0.9
    dense[rng.random(n) < 0.05, TWIN_A] = 0.3
    dense[~counted] = 0
    return dense


def _plant(store, params: Path) -> None:
    """Record the SAE, write its codes and per-unit statistics unit by unit, commit, merge."""
    from actstore.query.tokens import encode_text
    from actstore.query.windows import decode_tokens
    from actstore.saes.formats import load_sae
    from actstore.store.codes import create_code_arrays, latent_dtype
    from actstore.store.layout import FLAG_BOS, FLAG_PAD, code_array, token_array
    from actstore.store.metadata import SaeInfo, StageInfo
    from actstore.store.stats import (
        HIST_EDGES,
        L0_BINS,
        N_BINS,
        create_stats_arrays,
        merge_stats,
        sae_stats_path,
    )

    info = SaeInfo(name=PLANTED, site="blocks.0.hook_resid_post", architecture="jumprelu", d_in=D_IN, d_sae=D_SAE,
                   code_cap=CAP, value_dtype="float32", source=str(params), sha256=load_sae(str(params)).sha256,
                   stage=f"encode-{PLANTED}")
    grid = store.grid
    create_code_arrays(store.group, grid, info)
    create_stats_arrays(store.group, grid, {}, {PLANTED: D_SAE})
    store.update_meta(saes=[info], stages={**store.meta.stages, info.stage: StageInfo(units_total=grid.n_units)})
    ids = store.read(token_array("ids"), slice(None))
    flags = store.read(token_array("flags"), slice(None))
    counted = (flags & (FLAG_BOS | FLAG_PAD)) == 0
    split = np.concatenate([[t == "" for t in decode_tokens(store, row.tolist())] for row in ids]) & counted.reshape(-1)
    dense = planted_values(ids.reshape(-1), counted.reshape(-1), split, encode_text(store, " await"))
    ctx_len = store.meta.ctx_len
    for unit in range(grid.n_units):
        ctxs = grid.contexts(unit)
        rows = dense[ctxs.start * ctx_len : ctxs.stop * ctx_len]
        order = np.argsort(-rows, axis=1, kind="stable")[:, :CAP]
        vals = np.take_along_axis(rows, order, axis=1)
        idx = np.where(vals > 0, order, -1).astype(np.int32)
        shape = (len(ctxs), ctx_len)
        latent = np.maximum(idx, 0).astype(latent_dtype(D_SAE))  # format 3: 0 in empty slots, read by l0
        store.write(code_array(PLANTED, "latent"), slice(ctxs.start, ctxs.stop), latent.reshape(*shape, CAP))
        store.write(code_array(PLANTED, "value"), slice(ctxs.start, ctxs.stop), vals.reshape(*shape, CAP))
        store.write(code_array(PLANTED, "l0"), slice(ctxs.start, ctxs.stop), (idx >= 0).sum(1).astype(np.int32).reshape(shape))
        ok = counted[ctxs.start : ctxs.stop].reshape(-1)
        live = rows[ok]
        bins = np.searchsorted(HIST_EDGES, live, side="right")
        hist = np.stack([np.bincount(bins[:, j][live[:, j] > 0], minlength=N_BINS) for j in range(D_SAE)]).astype(np.int32)
        l0 = (live > 0).sum(1)
        stats = {"tokens": np.int64(ok.sum()), "over_cap": np.int64(0), "fired": (live > 0).sum(0).astype(np.int64),
                 "sum": live.sum(0, dtype=np.float64), "max": live.max(0, initial=0), "hist": hist,
                 "l0_hist": np.bincount(np.minimum(l0, L0_BINS - 1), minlength=L0_BINS).astype(np.int64)}
        for name, value in stats.items():
            store.write(sae_stats_path(PLANTED, name), unit, value)
        store.manifests.commit(info.stage, unit, {"contexts": [ctxs.start, ctxs.stop]})
    merge_stats(store.group, list(range(grid.n_units)), [], [PLANTED])
    store.update_meta(stages={**store.meta.stages, info.stage: StageInfo(units_total=grid.n_units, complete=True)})
