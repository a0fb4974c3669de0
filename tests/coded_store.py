"""A small extracted store with SAE codes and an index, shared by the index and query tests."""

from __future__ import annotations

from pathlib import Path

from actstore.cluster.extract import run_extract
from actstore.config import ExtractConfig
from tests.helpers import make_gemma_scope_sae, make_tiny_gemma2, sample_records, write_jsonl

SITE = "blocks.1.hook_resid_post"
SAE = "res1"
D_SAE = 96
BUCKET_NNZ = 1500  # a few buckets on a tiny store
BLOCK = 7  # and many blocks per latent


def coded_config(root: Path, *, sites: list[dict] | None = None, logits: bool = False) -> ExtractConfig:
    """The extraction config of the coded store built under ``root``; ``sites``: the captured
    sites (default: ``SITE`` in the model's dtype, default compression); ``logits``: keep the
    output logits with the index (a model load: only the browser's store asks for it)."""
    return ExtractConfig.model_validate({
        "store": {"url": str(root / "store")},
        "corpus": {"paths": [str(root / "corpus.jsonl")]},
        "model": {"id": str(root / "model")},
        "context": {"ctx_len": 16, "contexts_per_unit": 4},
        "sites": sites or [{"name": SITE}],
        "saes": [{"name": SAE, "site": SITE, "path": str(root / "sae/params.npz"), "code_cap": 20}],
        "workers": {"num_workers": 1, "batch_size": 4},
        "index": {"build": True, "bucket_nnz": BUCKET_NNZ, "block": BLOCK, "logits": logits},
    })


def build_coded_store(root: Path, tokenizer: Path, *, records: list[dict] | None = None,
                      sites: list[dict] | None = None, logits: bool = False) -> Path:
    """Extract a tiny Gemma 2 with one JumpReLU SAE and build its index; return the store path.
    ``records``: the corpus (default: 30 sample documents); ``sites``, ``logits``: as :func:`coded_config`."""
    write_jsonl(root / "corpus.jsonl", sample_records(30, seed=5) if records is None else records)
    make_tiny_gemma2(root / "model", tokenizer)
    make_gemma_scope_sae(root / "sae/params.npz", 64, D_SAE, seed=2, threshold=3.3)
    return Path(run_extract(coded_config(root, sites=sites, logits=logits)).location.url)
