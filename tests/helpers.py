"""Test helpers that build real artefacts: a tiny trained tokenizer and corpus files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import zstandard

SAMPLE_TEXT = (
    "the quick brown fox jumps over the lazy dog. a sparse autoencoder reads the residual stream; "
    "features fire on tokens, and every token appears exactly once in the store. "
    "def f(x):\n    return x * 2\n"
) * 4


def make_tiny_tokenizer(folder: Path, *, extra_text: str = "") -> Path:
    """Train a small BPE tokenizer (vocab < 256) with Gemma's special ids: pad 0, eos 1, bos 2;
    ``extra_text`` adds its characters to the alphabet."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=250, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"])
    tok.train_from_iterator([SAMPLE_TEXT, extra_text], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.save_pretrained(folder)
    return folder


def write_jsonl(path: Path, records: list[dict], *, compression: str | None = None) -> Path:
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    if compression == "gzip":
        data = gzip.compress(data)
    elif compression == "zstd":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def sample_records(n: int, *, seed: int = 0) -> list[dict]:
    """Documents of varied lengths (some spanning several contexts), with metadata."""
    import random

    rng = random.Random(seed)
    words = SAMPLE_TEXT.split()
    return [
        {"text": " ".join(rng.choice(words) for _ in range(rng.randint(1, 60))), "id": f"d{i}", "lang": "en", "n": i}
        for i in range(n)
    ]


TINY_GEMMA2 = dict(
    vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, head_dim=32, query_pre_attn_scalar=32, sliding_window=8,
)


def make_tiny_gemma2(folder: Path, tokenizer_dir: Path | None = None, *, seed: int = 0) -> Path:
    """A random tiny Gemma 2 saved as a real HF folder, with randomised RMSNorm weights
    (they start at zero in Gemma 2, which would hide a hook on the wrong side of a norm)."""
    import torch
    from transformers import AutoTokenizer, Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(seed)
    model = Gemma2ForCausalLM(Gemma2Config(**TINY_GEMMA2, attn_implementation="eager")).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(0.0, 0.5)
    model.save_pretrained(folder)
    if tokenizer_dir is not None:
        AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(folder)
    return folder


def make_gemma_scope_sae(path: Path, d_in: int, d_sae: int, *, seed: int = 0, lower_case: bool = False,
                         threshold: float = 0.05) -> Path:
    """A params.npz in the exact Gemma Scope layout (W_enc [d_in, d_sae], ..., threshold [d_sae])."""
    import numpy as np

    rng = np.random.default_rng(seed)
    params = {
        "W_enc": rng.normal(0, 1 / np.sqrt(d_in), (d_in, d_sae)).astype(np.float32),
        "W_dec": rng.normal(0, 1 / np.sqrt(d_sae), (d_sae, d_in)).astype(np.float32),
        "b_enc": rng.normal(0, 0.05, d_sae).astype(np.float32),
        "b_dec": rng.normal(0, 0.05, d_in).astype(np.float32),
        "threshold": np.full(d_sae, threshold, np.float32) + rng.uniform(0, 0.05, d_sae).astype(np.float32),
    }
    if lower_case:
        params = {k.replace("W_", "w_"): v for k, v in params.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **params)
    return path


def make_saelens_sae(folder: Path, d_in: int, d_sae: int, *, architecture: str, k: int | None = None,
                     apply_b_dec_to_input: bool = True, hook_name: str | None = None, seed: int = 0) -> Path:
    """A SAELens folder: cfg.json + sae_weights.safetensors."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {
        "W_enc": rng.normal(0, 1 / np.sqrt(d_in), (d_in, d_sae)).astype(np.float32),
        "W_dec": rng.normal(0, 1 / np.sqrt(d_sae), (d_sae, d_in)).astype(np.float32),
        "b_enc": rng.normal(0, 0.05, d_sae).astype(np.float32),
        "b_dec": rng.normal(0, 0.05, d_in).astype(np.float32),
    }
    if architecture == "jumprelu":
        weights["threshold"] = rng.uniform(0.02, 0.1, d_sae).astype(np.float32)
    save_file(weights, str(folder / "sae_weights.safetensors"))
    cfg = {"architecture": architecture, "d_in": d_in, "d_sae": d_sae, "hook_name": hook_name,
           "apply_b_dec_to_input": apply_b_dec_to_input, "normalize_activations": "none", "dtype": "float32"}
    if k is not None:
        cfg["k"] = k
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def write_tiny_job(folder: Path, tokenizer_dir: Path, *, store_url: str) -> Path:
    """An extraction config over a tiny corpus, model and SAE written into ``folder``: what the
    Ray job and local-cluster recipes submit."""
    write_jsonl(folder / "corpus.jsonl", sample_records(12, seed=9))
    make_tiny_gemma2(folder / "model", tokenizer_dir)
    make_gemma_scope_sae(folder / "sae/params.npz", 64, 32, threshold=0.6)
    config = folder / "job.yaml"
    config.write_text(f"""
store: {{url: {store_url}}}
corpus: {{paths: ["{folder / "corpus.jsonl"}"]}}
model: {{id: {folder / "model"}}}
context: {{ctx_len: 16, contexts_per_unit: 4}}
sites: [{{name: blocks.1.hook_resid_post}}]
saes: [{{name: res1, site: blocks.1.hook_resid_post, path: {folder / "sae"}}}]
workers: {{num_workers: 1}}
""")
    return config


def store_hashes(store) -> dict[str, str]:
    """sha256 of every array's full content (the comparison of two stores, array by array)."""
    import hashlib

    import numpy as np
    import zarr

    out = {}
    for path, node in sorted(store.group.members(max_depth=None)):
        if isinstance(node, zarr.Array):
            out[path] = hashlib.sha256(np.ascontiguousarray(node[...]).tobytes()).hexdigest()
    return out
