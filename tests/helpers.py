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


def make_tiny_tokenizer(folder: Path) -> Path:
    """Train a small BPE tokenizer (vocab < 256) with Gemma's special ids: pad 0, eos 1, bos 2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=250, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"])
    tok.train_from_iterator([SAMPLE_TEXT], trainer=trainer)
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
