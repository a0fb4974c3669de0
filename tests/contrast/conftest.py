"""A tiny store with planted contrasts: two corpus files (``topic`` a and b) read at the embedding
(``blocks.0.hook_resid_pre``, which depends on the token alone), and an SAE whose latents are
token detectors, so which latent fires where is known exactly.

- latent 0 (:data:`MARKER`) fires on a word that every document of topic a holds and no
  document of topic b does;
- latent 1 (:data:`ONE_DOC`) fires on a word that one document of topic a repeats 30 times;
- the other latents fire on words every document draws at random from the same list.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from actstore.cluster.extract import run_extract
from actstore.config import ExtractConfig
from tests.helpers import SAMPLE_TEXT, write_jsonl

SAE = "tokens"
MARKER, ONE_DOC = 0, 1
MARKER_WORD, ONE_DOC_WORD = "autoencoder", "residual"
DOCS_PER_TOPIC = 24


def _token_of(tok, word: str, others: list[str]) -> int:
    """A token of ``word`` that no word of ``others`` is tokenized with."""
    common = {t for w in others for t in tok.encode(" " + w, add_special_tokens=False)}
    mine = [t for t in tok.encode(" " + word, add_special_tokens=False) if t not in common]
    assert mine, f"{word!r} shares all its tokens with other words"
    return mine[0]


def _records(words: list[str]) -> list[dict]:
    rng = random.Random(3)
    records = []
    for topic in ("a", "b"):
        for i in range(DOCS_PER_TOPIC):
            text = [rng.choice(words) for _ in range(rng.randint(12, 30))]
            if topic == "a":
                for _ in range(rng.randint(1, 3)):
                    text.insert(rng.randrange(len(text) + 1), MARKER_WORD)
                if i == 5:
                    text += [ONE_DOC_WORD] * 30
            records.append({"text": " ".join(text), "topic": topic, "n": i})
    return records


def _detector_sae(path: Path, model: Path, tokens: list[int]) -> None:
    """A Gemma Scope params.npz whose latent i fires (value 1) on token ``tokens[i]`` alone:
    its encoder column is that token's site vector over its squared norm, threshold 0.5."""
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(str(model))
    embed = lm.get_input_embeddings().weight.detach().float().numpy() * np.sqrt(lm.config.hidden_size)
    chosen = embed[tokens]  # [d_sae, d]
    w_enc = (chosen / (chosen**2).sum(1, keepdims=True)).T.astype(np.float32)
    projections = embed @ w_enc  # every token against every detector
    others = projections.copy()
    others[tokens, np.arange(len(tokens))] = -np.inf
    assert others.max() < 0.5, "a detector would fire on another token"
    d, n = embed.shape[1], len(tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, W_enc=w_enc, W_dec=np.linalg.pinv(w_enc).astype(np.float32), b_enc=np.zeros(n, np.float32),
             b_dec=np.zeros(d, np.float32), threshold=np.full(n, 0.5, np.float32))


def build_contrast_store(root: Path, model: Path) -> Path:
    """Write the planted corpus and SAE under ``root`` and extract them with ``model`` (a tiny
    Gemma 2 folder with its tokenizer); return the store's path."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    words = sorted({w for w in SAMPLE_TEXT.split() if w.isalpha()} - {MARKER_WORD, ONE_DOC_WORD})
    marker, one = _token_of(tok, MARKER_WORD, words), _token_of(tok, ONE_DOC_WORD, words)
    common = sorted({t for w in words for t in tok.encode(" " + w, add_special_tokens=False)} - {marker, one})
    records = _records(words)
    write_jsonl(root / "a.jsonl", [r for r in records if r["topic"] == "a"])
    write_jsonl(root / "b.jsonl", [r for r in records if r["topic"] == "b"])
    _detector_sae(root / "sae/params.npz", model, [marker, one, *common[:30]])
    config = ExtractConfig.model_validate({
        "store": {"url": str(root / "store")},
        "corpus": {"paths": [str(root / "a.jsonl"), str(root / "b.jsonl")], "metadata_fields": ["topic", "n"]},
        "model": {"id": str(model)},
        "context": {"ctx_len": 32, "contexts_per_unit": 16},
        "sites": [{"name": "blocks.0.hook_resid_pre"}],
        "saes": [{"name": SAE, "site": "blocks.0.hook_resid_pre", "path": str(root / "sae/params.npz"), "code_cap": 8}],
        "workers": {"num_workers": 1, "batch_size": 16},
    })
    return Path(run_extract(config).location.url)


@pytest.fixture(scope="session")
def contrast_store(tmp_path_factory: pytest.TempPathFactory, coded_store: Path) -> Path:
    """The planted store (the coded store's tiny Gemma 2 and tokenizer reused); no index (a contrast reads codes)."""
    return build_contrast_store(tmp_path_factory.mktemp("contrast"), coded_store.parent / "model")
