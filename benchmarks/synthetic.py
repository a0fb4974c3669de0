"""Synthetic stores for the benchmarks: token arrays (one document per context, BOS first), the
documents table (``source`` names one of :data:`SOURCES` in turn), and optionally stored
activations of one site and/or codes of one SAE, every unit committed."""

from __future__ import annotations

import atexit
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ml_dtypes
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from actstore._version import __version__
from actstore.store._fs import Location
from actstore.store.codes import create_code_arrays, latent_dtype
from actstore.store.layout import (
    FLAG_BOS,
    activation_array,
    code_array,
    create_unit_array,
    token_array,
)
from actstore.store.metadata import (
    IngestSummary,
    RootMetadata,
    SaeInfo,
    SiteInfo,
    StageInfo,
    TokenizerInfo,
)
from actstore.store.stats import create_stats_arrays, merge_stats, sae_stats_path, site_stats_path
from actstore.store.store import EXTRACT_STAGE, TOKENS_STAGE, Store, utc_now

__all__ = ["SOURCES", "make_store", "on_moto", "scratch"]

SOURCES = ("corpus/web.jsonl", "corpus/code.jsonl", "corpus/books.jsonl", "corpus/news.jsonl")


def scratch(name: str) -> Path:
    """A new temporary folder for a benchmark's stores, removed when the benchmark exits (a
    default run leaves nothing behind; some write 0.5 GB)."""
    root = Path(tempfile.mkdtemp(prefix=f"actstore-{name}-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def make_store(url: str, n_tokens: int, *, ctx_len: int = 1024, per_unit: int = 64, site: tuple[str, int] | None = None,
               sae: tuple[str, int, int, int] | None = None, seed: int = 0) -> Store:
    """``site`` = (name, d): bf16 Gaussian activations. ``sae`` = (name, d_sae, mean L0, code cap):
    Zipf-distributed latents, exponential bf16 values."""
    n_ctx = -(-n_tokens // ctx_len)
    n_units = -(-n_ctx // per_unit)
    tok = TokenizerInfo(source={"id": "synthetic"}, name_or_path="synthetic", vocab_size=50_000, bos_token_id=1,
                        eos_token_id=2, pad_token_id=2)
    sites = [SiteInfo(name=site[0], d=site[1], dtype="bfloat16", stored=True)] if site else []
    saes = [SaeInfo(name=sae[0], site="synthetic", architecture="jumprelu", d_in=1, d_sae=sae[1], code_cap=sae[3],
                    value_dtype="bfloat16", source="synthetic", sha256="0")] if sae else []
    meta = RootMetadata(actstore_version=__version__, created=utc_now(), tokenizer=tok, ctx_len=ctx_len,
                        contexts_per_unit=per_unit, n_ctx=n_ctx, n_units=n_units, packing="document", separator="none",
                        ingest=IngestSummary(n_files=1, n_documents=n_ctx, n_tokens=n_ctx * (ctx_len - 1), skipped_empty=0,
                                             repaired_utf8=0, truncated_by_cap=False),
                        sites=sites, saes=saes, stages={TOKENS_STAGE: StageInfo(units_total=n_units, complete=True),
                                                        EXTRACT_STAGE: StageInfo(units_total=n_units)})
    store = Store.create(Location(url, {}), meta)
    grid = store.grid
    for name, (dtype, fill) in {"ids": ("int32", 0), "doc": ("int64", -1), "pos": ("int32", -1), "flags": ("uint8", 0)}.items():
        create_unit_array(store.group, token_array(name), grid, (), dtype, fill_value=fill)
    if site:
        create_unit_array(store.group, activation_array(site[0]), grid, (site[1],), "bfloat16", compression="none")
    for info in saes:
        create_code_arrays(store.group, grid, info)
    create_stats_arrays(store.group, grid, {s.name: s.d for s in sites}, {s.name: s.d_sae for s in saes})
    _write_documents(store, n_ctx, ctx_len)
    rng = np.random.default_rng(seed)
    if sae:
        p = 1.0 / np.arange(1, sae[1] + 1) ** 0.8
        p /= p.sum()
        perm = rng.permutation(sae[1])  # frequency rank -> latent id
    for unit in range(grid.n_units):
        ctxs = grid.contexts(unit)
        rows, n = slice(ctxs.start, ctxs.stop), len(ctxs) * ctx_len
        flags = np.zeros((len(ctxs), ctx_len), np.uint8)
        flags[:, 0] = FLAG_BOS
        counted = flags.reshape(-1) == 0
        store.write(token_array("ids"), rows, rng.integers(3, 50_000, size=(len(ctxs), ctx_len), dtype=np.int32))
        store.write(token_array("doc"), rows, np.repeat(np.arange(ctxs.start, ctxs.stop), ctx_len).reshape(len(ctxs), ctx_len))
        store.write(token_array("pos"), rows, np.tile(np.arange(ctx_len, dtype=np.int32), (len(ctxs), 1)))
        store.write(token_array("flags"), rows, flags)
        if site:
            x = rng.standard_normal((n, site[1]), dtype=np.float32)
            store.write(activation_array(site[0]), rows, x.astype(ml_dtypes.bfloat16).view(np.uint16).reshape(len(ctxs), ctx_len, -1))
            xc = x[counted].astype(np.float64)
            for name, value in (("count", np.int64(xc.shape[0])), ("sum", xc.sum(0)), ("sumsq", np.float64((xc**2).sum()))):
                store.write(site_stats_path(site[0], name), unit, value)
        if sae:
            name, d_sae, l0, cap = sae
            draws = perm[rng.choice(d_sae, size=(n, cap), p=p)]
            draws.sort(axis=1)
            dup = np.zeros_like(draws, bool)
            dup[:, 1:] = draws[:, 1:] == draws[:, :-1]
            keep = (~dup) & (np.cumsum(~dup, axis=1) <= rng.integers(l0 // 2, l0 * 3 // 2 + 1, size=n)[:, None])
            # the format's slots: a token's latents by value descending, then 0 past its L0
            val = np.where(keep, rng.exponential(2.0, size=draws.shape), 0).astype(ml_dtypes.bfloat16)
            order = np.argsort(np.where(keep, -val.astype(np.float32), np.inf), axis=1, kind="stable")
            ids = np.take_along_axis(np.where(keep, draws, 0).astype(latent_dtype(d_sae)), order, 1)
            val = np.take_along_axis(val, order, 1)
            shape = (len(ctxs), ctx_len, cap)
            store.write_many([(code_array(name, "latent"), rows, ids.reshape(shape)),
                              (code_array(name, "value"), rows, val.view(np.uint16).reshape(shape)),
                              (code_array(name, "l0"), rows, keep.sum(1).astype(np.int32).reshape(shape[:2]))])
            fired = counted[:, None] & keep
            store.write(sae_stats_path(name, "fired"), unit, np.bincount(draws[fired], minlength=d_sae))
        for stage in (TOKENS_STAGE, EXTRACT_STAGE):
            store.manifests.commit(stage, unit, {"contexts": [ctxs.start, ctxs.stop]})
    merge_stats(store.group, list(range(grid.n_units)), [s.name for s in sites], [s.name for s in saes])
    store.update_meta(stages={**store.meta.stages, EXTRACT_STAGE: StageInfo(units_total=n_units, complete=True)})
    return store


def _write_documents(store: Store, n_docs: int, ctx_len: int) -> None:
    """The documents table as ingestion writes it: one document per context, ``ctx_len - 1`` tokens."""
    doc = np.arange(n_docs, dtype=np.int64)
    table = pa.table({"doc": doc, "source": pa.array([SOURCES[d % len(SOURCES)] for d in range(n_docs)], pa.string()),
                      "row": doc // len(SOURCES), "key": pa.nulls(n_docs, pa.string()),
                      "n_tokens": np.full(n_docs, ctx_len - 1, np.int64), "n_tokens_stored": np.full(n_docs, ctx_len - 1, np.int64),
                      "repaired": np.zeros(n_docs, bool)})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    store.files.write_bytes("documents/part-000000.parquet", sink.getvalue())


@contextmanager
def on_moto(store: Path) -> Iterator[str]:
    """A local store copied to ``s3://bench/store`` on a loopback S3 API server (moto) for the
    block's duration; yields the endpoint (dummy credentials set unless already present)."""
    import s3fs
    from tests.conftest import start_moto

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(name, value)
    proc, endpoint = start_moto()
    try:
        fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
        fs.mkdir("bench")
        fs.put(str(store), "bench/store", recursive=True)
        yield endpoint
    finally:
        proc.terminate()
