"""Extraction on a GPU: Gemma 2 2B (or 9B) shaped, random weights, three 16k JumpReLU SAEs.

The model is built from the real config's shape (``google/gemma-2-2b``'s config.json, or 9B's
with ``--model 9b``) with random weights, in bfloat16 with eager attention (Gemma 2's soft-capping),
truncated after the deepest site as a worker loads it. Three residual-stream sites (2B: layers
6/12/19, as Gemma Scope's canonical SAEs) each get a 16,384-latent JumpReLU SAE whose thresholds
are set from the model's own activations to a mean L0 near 80. Tokens come from a synthetic
local store (random ids, BOS first).

Measured side by side, interleaved rounds, the same batches:
- bare: the truncated forward capturing the three sites (tokens/s);
- pipeline: the worker's unit pipeline (forward, encode on the device, statistics, whole-shard
  writes of activations and codes to the local store, manifest), two units in flight as on a GPU
  worker (tokens/s);
- where a unit's time goes: the pipeline's compute part and its writes, per unit, next to the
  bare forward's time for the same tokens;
- their ratio (goal on a GPU >= 0.95), model FLOP utilisation of both (model FLOPs only: 2 x the
  parameters of the blocks run + attention; the SAE encode's FLOPs are printed apart), bytes
  written per second and the GPU memory peak.

Run: ``python benchmarks/bench_gpu.py [--model 2b|9b] [--tokens N] [--compression C] [--json FILE]``. Without a
GPU the default is ``--model tiny``, a smoke run (also ``tests/test_bench_gpu.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))

from actstore.config import ExtractConfig
from actstore.extraction.arrays import create_extract_arrays
from actstore.extraction.estimate import model_flops_per_token
from actstore.extraction.plan import plan_extraction
from actstore.extraction.unit import UnitReport, UnitRunner
from actstore.models.capture import capture_sites
from actstore.models.loading import truncated_config, weights_bytes
from actstore.saes.encode import SAEEncoder
from actstore.store.store import Store
from benchmarks.synthetic import make_store, scratch

# The fields of google/gemma-2-2b's and google/gemma-2-9b's config.json that shape compute.
_GEMMA2_COMMON = dict(vocab_size=256_000, head_dim=256, query_pre_attn_scalar=256, sliding_window=4096,
                      attn_logit_softcapping=50.0, final_logit_softcapping=30.0, hidden_activation="gelu_pytorch_tanh",
                      max_position_embeddings=8192, rms_norm_eps=1e-6, rope_theta=10000.0)
SHAPES: dict[str, dict[str, Any]] = {
    "2b": dict(_GEMMA2_COMMON, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
               num_key_value_heads=4),
    "9b": dict(_GEMMA2_COMMON, hidden_size=3584, intermediate_size=14336, num_hidden_layers=42, num_attention_heads=16,
               num_key_value_heads=8),
    "tiny": dict(vocab_size=50_000, head_dim=16, query_pre_attn_scalar=16, sliding_window=32, hidden_size=64,
                 intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2),
}
LAYERS = {"2b": (6, 12, 19), "9b": (9, 20, 31), "tiny": (0, 1, 2)}
DEFAULTS = {"gpu": dict(tokens=262_144, ctx_len=1024, contexts_per_unit=64, batch=16, d_sae=16_384),
            "tiny": dict(tokens=4096, ctx_len=64, contexts_per_unit=16, batch=8, d_sae=512)}
TARGET_L0 = 80
# dense bf16 tensor-core peaks (FLOP/s) by device name, from the vendors' data sheets
PEAKS = {"H100 SXM": 989e12, "H100 80GB HBM3": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H200": 989e12,
         "A100": 312e12, "L40S": 362e12, "L4": 121e12}


def peak_flops(device: torch.device, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAKS.items() if k in name), None)


def write_saes(root: Path, model: Any, sites: list[str], ids: torch.Tensor, d_sae: int, device: torch.device) -> dict[str, Path]:
    """Gemma Scope params.npz files, random weights, thresholds set from the model's activations
    so that a token fires about ``TARGET_L0`` latents."""
    d = model.config.hidden_size
    x = capture_sites(model, ids.to(device), sites)
    rng = np.random.default_rng(0)
    paths = {}
    for i, site in enumerate(sites):
        w_enc = rng.normal(0, 1 / np.sqrt(d), (d, d_sae)).astype(np.float32)
        pre = x[site].reshape(-1, d).float() @ torch.from_numpy(w_enc).to(device)
        threshold = torch.quantile(pre.flatten()[:2_000_000].cpu(), 1 - TARGET_L0 / d_sae).item()
        paths[site] = root / f"sae{i}" / "params.npz"
        paths[site].parent.mkdir(parents=True)
        np.savez(paths[site], W_enc=w_enc, W_dec=rng.normal(0, 1 / np.sqrt(d_sae), (d_sae, d)).astype(np.float32),
                 b_enc=np.zeros(d_sae, np.float32), b_dec=np.zeros(d, np.float32),
                 threshold=np.full(d_sae, max(threshold, 1e-3), np.float32))
    return paths


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@dataclass
class Setup:
    """Everything a measurement needs: the truncated model, the prepared store, a unit runner."""

    device: torch.device
    cfg: Any
    model: Any
    store: Store
    runner: UnitRunner
    sites: list[str]
    layers: tuple[int, ...]
    ids: torch.Tensor  # every context's token ids [n_ctx, ctx_len]
    root: Path


def setup(args: argparse.Namespace) -> Setup:
    """Build the model, the store (tokens, extraction arrays) and the SAEs; run nothing timed."""
    from transformers import Gemma2Config, Gemma2Model

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    root = Path(args.dir) if args.dir else scratch("bench-gpu")
    layers = LAYERS[args.model]
    sites = [f"blocks.{layer}.hook_resid_post" for layer in layers]
    full = Gemma2Config(**SHAPES[args.model], attn_implementation="eager")
    full.save_pretrained(root / "model")  # the config only: the plan validates sites against it
    cfg = truncated_config(full, max(layers) + 1)
    torch.manual_seed(0)
    with torch.device(device):
        model = Gemma2Model._from_config(cfg, dtype=dtype).eval()

    store_url = str(root / "store")
    make_store(store_url, args.tokens, ctx_len=args.ctx_len, per_unit=args.contexts_per_unit)
    ids_all = torch.from_numpy(Store.open(store_url).tokens(slice(None))["ids"].astype(np.int64))
    sae_paths = write_saes(root, model, sites, ids_all[: args.batch], args.d_sae, device)
    config = ExtractConfig.model_validate({
        "store": {"url": store_url}, "corpus": {"paths": ["unused"]},
        "model": {"id": str(root / "model"), "dtype": args.dtype},
        "context": {"ctx_len": args.ctx_len, "contexts_per_unit": args.contexts_per_unit},
        "sites": [{"name": s, "compression": args.compression} for s in sites],
        "saes": [{"name": f"res{layer}", "site": s, "path": str(sae_paths[s]), "code_cap": 256} for layer, s in zip(layers, sites, strict=True)],
        "workers": {"batch_size": args.batch},
    })
    plan, weights = plan_extraction(config, gpu_workers=device.type == "cuda")
    store = Store.open(store_url, mode="r+")
    create_extract_arrays(store, plan, config_record={})
    runner = UnitRunner(store, plan, model, {n: SAEEncoder(w, device) for n, w in weights.items()}, device)
    return Setup(device, cfg, model, store, runner, sites, layers, ids_all, root)


def run(args: argparse.Namespace) -> dict[str, Any]:
    s = setup(args)
    device, cfg, model, store, runner, sites, layers, ids_all, root = (s.device, s.cfg, s.model, s.store, s.runner, s.sites,
                                                                      s.layers, s.ids, s.root)
    plan = runner.plan
    units = list(range(store.meta.n_units))
    n_tokens = store.meta.n_ctx * args.ctx_len

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def bare() -> float:
        sync()
        start = time.perf_counter()
        for u in units:
            rows = store.grid.contexts(u)
            for b0 in range(rows.start, rows.stop, args.batch):
                capture_sites(model, ids_all[b0 : min(b0 + args.batch, rows.stop)].to(device), sites)
        sync()
        return n_tokens / (time.perf_counter() - start)

    reports: list[UnitReport] = []

    def pipeline() -> float:
        sync()
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=plan.units_in_flight) as pool:
            reports.extend(pool.map(runner.run, units))
        sync()
        return n_tokens / (time.perf_counter() - start)

    before = dir_bytes(root / "store")
    bare()  # warm-up (kernels, allocator)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    results: dict[str, list[float]] = {"bare": [], "pipeline": []}
    for _ in range(args.rounds):
        results["bare"].append(bare())
        results["pipeline"].append(pipeline())
    written = dir_bytes(root / "store") - before  # one pass writes every unit's shards once (reruns overwrite)
    med = {k: float(np.median(v)) for k, v in results.items()}
    per_token = model_flops_per_token(cfg, max(layers) + 1, args.ctx_len)
    peak = peak_flops(device, args.peak_tflops)
    l0 = store.read(f"codes/res{layers[0]}/l0", slice(None))
    out = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "model": f"gemma-2-{args.model} shape, random weights, {args.dtype}, eager attention, blocks 0..{max(layers)}",
        "sites": sites, "d_sae": args.d_sae, "mean_l0": float(l0.mean()), "tokens": n_tokens, "ctx_len": args.ctx_len,
        "batch": args.batch, "rounds": args.rounds, "weights_gb": weights_bytes(model) / 1e9,
        "bare_tok_s": med["bare"], "pipeline_tok_s": med["pipeline"],
        "ratio": float(np.median([p / b for p, b in zip(results["pipeline"], results["bare"], strict=True)])),
        "ratios": [p / b for p, b in zip(results["pipeline"], results["bare"], strict=True)],
        "model_gflop_per_token": per_token / 1e9, "sae_gflop_per_token": 2 * 3 * cfg.hidden_size * args.d_sae / 1e9,
        "mfu_bare": None if peak is None else med["bare"] * per_token / peak,
        "mfu_pipeline": None if peak is None else med["pipeline"] * per_token / peak,
        "peak_tflops": None if peak is None else peak / 1e12,
        "bytes_written_per_pass": written, "written_mb_s": written / (n_tokens / med["pipeline"]) / 1e6,
        "gpu_memory_peak_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None,
        # where a unit's time goes (medians over every unit of every round), against the bare
        # forward's time for a unit's tokens: with 2 units in flight the writes of one overlap the
        # compute of the next, so the pipeline keeps up with the bare forward only if compute does
        "unit_tokens": args.contexts_per_unit * args.ctx_len,
        "unit_bare_s": args.contexts_per_unit * args.ctx_len / med["bare"],
        "unit_compute_s": float(np.median([r.compute_seconds for r in reports])),
        "unit_write_s": float(np.median([r.write_seconds for r in reports])),
        "units_in_flight": plan.units_in_flight,
    }
    return out


def report(r: dict[str, Any]) -> None:
    mfu = lambda v: "n/a (unknown peak: --peak-tflops)" if v is None else f"{v:.1%}"  # noqa: E731
    print(f"{r['device']}: {r['model']}; sites {', '.join(r['sites'])}; 3 JumpReLU SAEs x {r['d_sae']:,} "
          f"(mean L0 {r['mean_l0']:.0f}); {r['tokens']:,} tokens, ctx {r['ctx_len']}, batch {r['batch']}, "
          f"{r['rounds']} rounds; weights on the device {r['weights_gb']:.2f} GB")
    print(f"bare truncated forward : {r['bare_tok_s']:12,.0f} tokens/s   MFU {mfu(r['mfu_bare'])}")
    print(f"extraction pipeline    : {r['pipeline_tok_s']:12,.0f} tokens/s   MFU {mfu(r['mfu_pipeline'])}")
    print(f"ratio pipeline/bare    : {r['ratio']:.3f} (rounds {', '.join(f'{x:.3f}' for x in r['ratios'])}; goal on a GPU >= 0.95)")
    print(f"per unit ({r['unit_tokens']:,} tokens): bare forward {r['unit_bare_s']:.3f} s; pipeline compute "
          f"{r['unit_compute_s']:.3f} s (forward, encode, statistics, copies to host), writes {r['unit_write_s']:.3f} s "
          f"(shards and manifest); {r['units_in_flight']} unit(s) in flight")
    print(f"written                : {r['written_mb_s']:,.0f} MB/s ({r['bytes_written_per_pass'] / 1e9:.2f} GB per pass)")
    if r["gpu_memory_peak_gb"] is not None:
        print(f"GPU memory peak        : {r['gpu_memory_peak_gb']:.1f} GB")
    print(f"model {r['model_gflop_per_token']:.2f} GFLOP/token (MFU counts these); SAE encode {r['sae_gflop_per_token']:.2f} GFLOP/token")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(SHAPES), help="default: 2b with a GPU, else tiny (a smoke run)")
    parser.add_argument("--tokens", type=int)
    parser.add_argument("--ctx-len", type=int)
    parser.add_argument("--contexts-per-unit", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--d-sae", type=int)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--compression", choices=["shuffle-zstd", "zstd", "none"], default="shuffle-zstd",
                        help="the activations' codec chain (default: the store's default)")
    parser.add_argument("--device", help="default: cuda when available")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense peak, where its name is not in the table")
    parser.add_argument("--dir", help="working folder (default: a new temporary one)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    args.model = args.model or ("2b" if torch.cuda.is_available() else "tiny")
    for name, value in DEFAULTS["tiny" if args.model == "tiny" else "gpu"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = run(args)
    report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
