"""What an extraction of N tokens will produce and need, before any work (``actstore plan``).

Sizes follow the layout (schemas/STORE.md): every per-token array is ``[n_ctx, ctx_len, ...]``
with one shard object per unit; per-unit statistics are one object per unit and array.
Uncompressed arrays are exact: values plus the shard index (16 bytes per inner chunk and a 4-byte
checksum). Compressed activations (``shuffle-zstd`` by default) use the ratios measured on real
activations (:data:`COMPRESSION_RATIOS`). Other compressed arrays are estimated from what they
hold: a code array's slots past a token's L0 are zeros and compress to almost nothing, so codes
cost about ``L0 x (id bytes + value bytes)`` per token (:data:`CODE_VALUE_BYTES`), at the SAE's
mean L0 (given, read from a Gemma Scope path such as ``average_l0_82``, or a quarter of the code
cap, as stated in the output).
GPU-hours come from throughput measured by ``benchmarks/bench_gpu.py`` (:data:`MEASURED`; for
other models that of Gemma 2 2B), scaled by the run's FLOPs per token (the model's blocks plus
the SAE encoders) against the measured run's; they are labelled as such.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actstore.extraction.host import HostCores, host_cores
from actstore.extraction.memory import WorkerMemory, sae_flops_per_token
from actstore.extraction.plan import ExtractPlan
from actstore.index.profile import PROFILE_ARRAYS, PROFILE_TOP
from actstore.saes.formats import sae_files
from actstore.store.codes import latent_dtype
from actstore.store.dtypes import storage_dtype
from actstore.store.layout import TARGET_INNER_CHUNK_BYTES, TOKEN_ARRAYS
from actstore.store.stats import L0_BINS, N_BINS, SAE_STATS, SITE_STATS

# raw / stored size of activations per (codec chain, dtype), measured on real SmolLM2-135M
# activations (layers 5, 15, 25) by benchmarks/bench_codecs.py; see docs/storage.md
COMPRESSION_RATIOS: dict[tuple[str, str], float] = {
    ("shuffle-zstd", "bfloat16"): 1.45, ("shuffle-zstd", "float32"): 1.18,
    ("zstd", "bfloat16"): 1.28, ("zstd", "float32"): 1.08,
}

__all__ = ["CODE_VALUE_BYTES", "COMPRESSION_RATIOS", "MEASURED", "ArrayEstimate", "RunEstimate", "estimate_run",
           "model_flops_per_token"]

# stored bytes per token of the zstd token arrays (ids: ~2-3 bytes of entropy for a 50-256k
# vocabulary; doc and pos: runs, nearly free; flags: nearly all zero)
TOKEN_BYTES = {"ids": 2.5, "doc": 0.05, "pos": 0.15, "flags": 0.02}
# zstd on code slots that hold a latent: an id keeps about its bits of entropy plus half a byte
L0_BYTES = 0.5
# per-unit SAE statistics, per latent that fired in the unit: fired (small counts), sum
# (float64), max (float32), the histogram's few non-zero bins
SAE_STATS_BYTES = {"fired": 3, "sum": 8, "max": 4, "hist": 12}

ARRAY_META_BYTES, FRAME_BYTES = 700, 45  # an array's zarr.json; a compressed object's frame and headers
BLOSC_FRAME_BYTES = 350  # a shuffled object's headers and zstd tables (a few KB of codes: ~350 B more than their entropy)
# Stored bytes per non-zero through byte shuffle and zstd, measured on the demo's real codes and
# on synthetic ones (benchmarks/bench_code_bytes.py, docs/storage.md): a latent id keeps about
# its bits of entropy (log2 d_sae) and 0.15 bytes more; values by dtype, in the codes (ordered by
# value within a token) and in the index (token order within a block). Index tokens are gaps
# within a block: about log2(mean gap) + 1.5 bits.
CODE_VALUE_BYTES = {"bfloat16": 1.2, "float16": 1.33, "float32": 3.1}
INDEX_VALUE_BYTES = {"bfloat16": 1.3, "float16": 1.7, "float32": 3.24}
PROFILE_RATIO = 0.26  # stored / logical bytes of the token profiles (27 kB of 106 kB on the coded test store)

# Throughput measured by benchmarks/bench_gpu.py (extraction pipeline, bf16, 3 sites with 16k
# JumpReLU SAEs, local store): (model shape, device) -> tokens/s, with its source
MEASURED: dict[tuple[str, str], tuple[float, float, str]] = {
    ("gemma-2-2b", "NVIDIA H100 80GB HBM3"): (
        21_460, 80_962, "benchmarks/bench_gpu.py --model 2b on an NVIDIA H100 80GB HBM3, 2026-11-23: pipeline 21,460 "
                        "tok/s, bare truncated forward 80,962 tok/s (blocks 0..19, 3 sites, 16k SAEs)"),
    ("gemma-2-9b", "NVIDIA H100 80GB HBM3"): (
        10_224, 25_130, "benchmarks/bench_gpu.py --model 9b on an NVIDIA H100 80GB HBM3, 2026-11-23: pipeline 10,224 "
                        "tok/s, bare truncated forward 25,130 tok/s (blocks 0..31, 3 sites, 16k SAEs)"),
}
_MEASURED_FLOPS = {"gemma-2-2b": 3.198e9, "gemma-2-9b": 12.95e9}  # model FLOPs/token of those runs
_MEASURED_SAE_FLOPS = {"gemma-2-2b": 3 * 2 * 2304 * 16384, "gemma-2-9b": 3 * 2 * 3584 * 16384}  # their three 16k encoders


@dataclass(frozen=True)
class ArrayEstimate:
    """One array (or family of arrays): logical bytes (values as stored, uncompressed), stored
    bytes (estimate after compression and shard indexes) and objects."""

    path: str
    logical_bytes: int
    stored_bytes: int
    objects: int
    note: str = ""
    family: str = ""  # the path with its site or SAE name as <site> / <sae>: rows of many SAEs are shown summed by it


@dataclass(frozen=True)
class RunEstimate:
    """The estimate of a whole run (see the module docstring for what is exact and what is not)."""

    tokens: int
    n_ctx: int
    n_units: int
    arrays: list[ArrayEstimate]
    requests: dict[str, int]
    weights_bytes: int | None
    blocks: int
    gpu_hours: float | None
    gpu_hours_source: str
    assumptions: list[str] = field(default_factory=list)
    worker: WorkerMemory | None = None  # a worker's device and host memory (given the model's shapes)
    saes: list[dict[str, Any]] = field(default_factory=list)  # name, site, d_in, d_sae, mean L0, source
    host: HostCores | None = None  # host cores per GPU (GPU workers only)

    @property
    def stored_bytes(self) -> int:
        return sum(a.stored_bytes for a in self.arrays)

    @property
    def objects(self) -> int:
        return sum(a.objects for a in self.arrays)

    def as_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "n_ctx": self.n_ctx, "n_units": self.n_units,
                "arrays": [asdict(a) for a in self.arrays], "stored_bytes": self.stored_bytes, "objects": self.objects,
                "requests": self.requests, "weights_bytes_per_worker": self.weights_bytes, "blocks_per_worker": self.blocks,
                "gpu_hours": self.gpu_hours, "gpu_hours_source": self.gpu_hours_source, "assumptions": self.assumptions,
                "worker": None if self.worker is None else self.worker.as_dict(), "saes": self.saes,
                "host_cores_per_gpu": None if self.host is None else asdict(self.host)}

    def render(self) -> str:
        """The estimate as text: arrays, totals, requests, worker memory, GPU-hours, assumptions."""
        gb = lambda n: f"{n / 1e9:10,.2f} GB"  # noqa: E731
        lines = [f"SAEs: {len(self.saes)}"] + [f"  {s['name']:16} {s['site']:28} {s['d_in']:>6} -> {s['d_sae']:<8,} L0 {s['l0']:<6g} "
                                               f"{s['source']}" for s in self.saes] if self.saes else []
        lines.append(f"{'array':44} {'logical':>13} {'stored (est.)':>13} {'objects':>10}  note")
        lines += [f"{a.path:44} {gb(a.logical_bytes):>13} {gb(a.stored_bytes):>13} {a.objects:>10,}  {a.note}"
                  for a in _summed(self.arrays, many=len(self.saes) > SHOWN_ONE_BY_ONE)]
        lines.append(f"{'total':44} {gb(sum(a.logical_bytes for a in self.arrays)):>13} {gb(self.stored_bytes):>13} {self.objects:>10,}")
        lines.append("requests on object storage: " + ", ".join(f"{k} {v:,}" for k, v in self.requests.items()))
        if self.weights_bytes is not None:
            lines.append(f"weights per worker: {self.weights_bytes / 1e9:.2f} GB (the first {self.blocks} blocks and the embedding)")
        if self.worker is not None:
            lines += self.worker.render()
        hours = "unknown" if self.gpu_hours is None else f"{self.gpu_hours:,.1f}"
        lines.append(f"GPU-hours: {hours} ({self.gpu_hours_source})")
        if self.host is not None:
            lines.append(self.host.render())
        lines += [f"assumed: {a}" for a in self.assumptions]
        return "\n".join(lines)


SHOWN_ONE_BY_ONE = 4  # with more SAEs, the text sums their arrays by kind


def _summed(arrays: list[ArrayEstimate], *, many: bool) -> list[ArrayEstimate]:
    """``arrays`` as they are, or with ``many``, one row per family (codes/<sae>/latent over every SAE, ...)."""
    if not many:
        return arrays
    out: dict[str, ArrayEstimate] = {}
    counts: dict[str, int] = {}
    for a in arrays:
        key = a.family or a.path
        counts[key] = counts.get(key, 0) + 1
        seen = out.get(key)
        out[key] = a if seen is None else ArrayEstimate(key, seen.logical_bytes + a.logical_bytes,
                                                       seen.stored_bytes + a.stored_bytes, seen.objects + a.objects, a.note)
    return [ArrayEstimate(f"{k} (x{counts[k]})" if counts[k] > 1 else k, a.logical_bytes, a.stored_bytes, a.objects, a.note)
            for k, a in out.items()]


def _per_token(path: str, plan: ExtractPlan, n_ctx: int, n_units: int, tail: int, dtype: str, *,
               stored_per_token: float | None = None, frame: int = FRAME_BYTES, note: str = "",
               family: str = "") -> ArrayEstimate:
    """A ``[n_ctx, ctx_len, tail]`` array: exact when uncompressed (values + shard index)."""
    ctx_len, per_unit = plan.config.context.ctx_len, plan.config.context.contexts_per_unit
    itemsize = storage_dtype(dtype).itemsize
    logical = n_ctx * ctx_len * tail * itemsize
    row = ctx_len * tail * itemsize
    inner = max(1, min(per_unit, TARGET_INNER_CHUNK_BYTES // max(row, 1)))
    while per_unit % inner:
        inner -= 1
    sharded = inner != per_unit
    index = n_units * (16 * (per_unit // inner) + 4) if sharded else 0
    # the last shard is stored whole (its contexts past n_ctx hold the fill value)
    stored = n_units * per_unit * row if stored_per_token is None else int(n_ctx * ctx_len * stored_per_token) + n_units * frame
    return ArrayEstimate(path, logical, stored + index + ARRAY_META_BYTES, n_units + 1, note, family)


def _default_l0(path: str, cap: int) -> tuple[float, str]:
    match = re.search(r"average_l0_(\d+)", path)
    if match:
        return float(match.group(1)), f"mean L0 {match.group(1)} (from the SAE's path)"
    return cap / 4, f"mean L0 {cap / 4:g} (a quarter of the code cap; pass --l0 for a better figure)"


def estimate_run(plan: ExtractPlan, tokens: int, *, l0: dict[str, float] | None = None, weights_bytes: int | None = None,
                 flops_per_token: float | None = None, n_files: int = 1, doc_tokens: float = 1000,
                 worker: WorkerMemory | None = None) -> RunEstimate:
    """Estimate a run of ``tokens`` document tokens (documents of ``doc_tokens`` on average)
    under ``plan`` (see the module docstring); ``worker``: a worker's memory, shown with it."""
    ctx = plan.config.context
    per_ctx = ctx.ctx_len - 1 if ctx.packing == "pack" else ctx.ctx_len  # BOS first in every packed context
    separators = math.ceil(tokens / doc_tokens) if ctx.separator == "eos" else 0  # an EOS after each document
    n_ctx = max(1, math.ceil((tokens + separators) / per_ctx))
    n_units = math.ceil(n_ctx / ctx.contexts_per_unit)
    slots = n_ctx * ctx.ctx_len
    arrays = [_per_token(f"tokens/{name}", plan, n_ctx, n_units, 1, dtype, stored_per_token=TOKEN_BYTES[name])
              for name, (dtype, _) in TOKEN_ARRAYS.items()]
    assumptions = [f"documents of {doc_tokens:,.0f} tokens on average ({separators:,} EOS separators)",
                   f"{tokens:,} document tokens pack into {n_ctx:,} contexts of {ctx.ctx_len} "
                   f"({'BOS + ' if ctx.packing == 'pack' else ''}{per_ctx} tokens each), {n_units:,} units"]
    for site in plan.sites:
        if site.stored:
            ratio = COMPRESSION_RATIOS.get((site.compression, site.dtype), 1.0) if site.compression != "none" else None
            arrays.append(_per_token(
                f"activations/{site.name}", plan, n_ctx, n_units, site.d, site.dtype, family="activations/<site>",
                stored_per_token=None if ratio is None else site.d * storage_dtype(site.dtype).itemsize / ratio,
                note="exact" if ratio is None else f"{site.compression}: {ratio:g}x smaller than raw, as measured on "
                     "SmolLM2 activations by benchmarks/bench_codecs.py"))
        stored_site: dict[str, float] = {"count": 17, "sum": site.d * 8, "sumsq": 17}
        arrays.append(ArrayEstimate(f"stats/sites/{site.name}", *_stats_bytes(n_units, {"count": 1, "sum": site.d, "sumsq": 1},
                                                                             SITE_STATS, stored_site), family="stats/sites/<site>"))
    index_buckets = 0
    saes: list[dict[str, Any]] = []
    for sae in plan.saes:
        mean_l0, why = (l0[sae.name], f"mean L0 {l0[sae.name]:g} (given)") if l0 and sae.name in l0 else _default_l0(sae.source, sae.code_cap)
        if len(plan.saes) <= SHOWN_ONE_BY_ONE or not why.endswith("(from the SAE's path)"):
            assumptions.append(f"{sae.name}: {why}")
        saes.append({"name": sae.name, "site": sae.site, "d_in": sae.d_in, "d_sae": sae.d_sae, "l0": mean_l0, "source": sae.source})
        used = min(mean_l0, sae.code_cap)
        value_bytes = storage_dtype(sae.value_dtype).itemsize
        arrays += [
            _per_token(f"codes/{sae.name}/latent", plan, n_ctx, n_units, sae.code_cap, latent_dtype(sae.d_sae),
                       stored_per_token=used * (math.log2(sae.d_sae) / 8 + 0.15), frame=BLOSC_FRAME_BYTES,
                       family="codes/<sae>/latent"),
            _per_token(f"codes/{sae.name}/value", plan, n_ctx, n_units, sae.code_cap, sae.value_dtype,
                       stored_per_token=used * CODE_VALUE_BYTES.get(sae.value_dtype, value_bytes), frame=BLOSC_FRAME_BYTES,
                       family="codes/<sae>/value"),
            _per_token(f"codes/{sae.name}/l0", plan, n_ctx, n_units, 1, "int32", stored_per_token=L0_BYTES, family="codes/<sae>/l0"),
        ]
        # latents firing in a unit: firing concentrates on frequent latents, so count a quarter of the occurrences
        fired = sae.d_sae * (1 - math.exp(-used * ctx.contexts_per_unit * ctx.ctx_len / 4 / sae.d_sae))
        widths = {"tokens": 1, "fired": sae.d_sae, "sum": sae.d_sae, "max": sae.d_sae, "hist": sae.d_sae * N_BINS,
                  "l0_hist": L0_BINS, "over_cap": 1}
        stored_sae = {name: fired * b for name, b in SAE_STATS_BYTES.items()} | {"l0_hist": 60, "tokens": 17, "over_cap": 0}
        arrays.append(ArrayEstimate(f"stats/saes/{sae.name}", *_stats_bytes(n_units, widths, SAE_STATS, stored_sae),
                                    family="stats/saes/<sae>"))
        nnz = int((slots - n_ctx) * used)  # BOS left out
        if plan.config.index.build:
            buckets = _index_buckets(sae.d_sae, nnz, plan.config.index.bucket_nnz)
            logical = nnz * (8 + value_bytes) + (sae.d_sae + buckets) * 8
            gap = (math.log2(max(slots / max(min(plan.config.index.block, nnz / sae.d_sae), 1), 2)) + 1.5) / 8
            per_nnz = gap + INDEX_VALUE_BYTES.get(sae.value_dtype, value_bytes)
            stored = int(nnz * per_nnz) + (sae.d_sae + buckets) * 2 + buckets * 2000
            arrays.append(ArrayEstimate(f"index/{sae.name}", logical, stored, buckets * 7 + 1,
                                        f"{buckets} buckets; ~{per_nnz:.1f} B per occurrence (token gaps ~{gap:.1f} B)", "index/<sae>"))
            arrays.append(_profile_estimate(sae.name, sae.d_sae, buckets))
            index_buckets += buckets
        if sae.file is not None:  # a local SAE's files, copied into the store (STORE.md: SAE files)
            files = sae_files(Path(sae.source))
            size = sum(f.stat().st_size for f in files)
            arrays.append(ArrayEstimate(sae.file, size, size, len(files), "the SAE's files, copied into the store"))
    manifests = n_units * (2 + (len(plan.saes) if plan.config.index.build else 0)) + index_buckets
    groups = 5 + 2 * len(plan.sites) + 2 * len(plan.saes)  # zarr.json of the groups
    arrays.append(ArrayEstimate("_manifests, documents, groups", 0, manifests * 110 + groups * 70 + n_files * 2000,
                                manifests + groups + n_files + 1, "one manifest per unit and stage (and index bucket)"))
    written = sum(a.objects for a in arrays)
    requests = {"PUT": written, "GET": n_units * (2 + 2 * len(plan.saes)), "HEAD": n_units * 4}
    assumptions.append("requests: a PUT per object written; GETs of each unit's tokens (ids, flags) and, for the index, "
                       "its codes; HEADs for manifest checks; extraction retries add to these")
    gpu_hours, source = _gpu_hours(plan, tokens, flops_per_token)
    blocks = max(int(s.name.split(".")[1]) for s in plan.sites) + 1
    bare, bare_source = _bare_forward(plan, flops_per_token)
    host = host_cores(plan, bare, bare_source) if bare and plan.device == "cuda" else None
    return RunEstimate(tokens, n_ctx, n_units, arrays, requests, weights_bytes, blocks, gpu_hours, source, assumptions,
                       worker, saes, host)


def _stats_bytes(n_units: int, widths: dict[str, int], kinds: dict[str, tuple[str, str]],
                 stored_bytes: dict[str, float]) -> tuple[int, int, int]:
    """Per-unit rows (one object each per unit) plus the merged row: logical, stored, objects.
    ``stored_bytes`` is the estimated size of one row's object, per array."""
    logical = stored = 0.0
    for name, width in widths.items():
        logical += (n_units + 1) * width * np.dtype(kinds[name][0]).itemsize
        stored += (n_units + 1) * stored_bytes[name] + 2 * ARRAY_META_BYTES
    # per array: a row object per unit and a zarr.json, the merged row and its zarr.json (rows
    # that are all zeros are not written: zarr skips chunks equal to the fill value)
    return int(logical), int(stored), len(widths) * (n_units + 3)


def _profile_estimate(sae: str, d_sae: int, buckets: int) -> ArrayEstimate:
    """The token profiles kept with an index (:mod:`actstore.index.profile`): per latent a row of
    each array, ``PROFILE_TOP`` wide for the kept tokens and bigrams, chunked by bucket. Mostly
    small counts and fill: zstd keeps about a quarter (measured on the test stores)."""
    row = sum(np.dtype(dtype).itemsize * (PROFILE_TOP if wide else 1) for dtype, _, wide in PROFILE_ARRAYS.values())
    logical = d_sae * row
    return ArrayEstimate(f"index/{sae}/profile", logical, int(logical * PROFILE_RATIO),
                         len(PROFILE_ARRAYS) * (buckets + 1) + 1, f"top {PROFILE_TOP} tokens and bigrams a latent",
                         "index/<sae>/profile")


def _index_buckets(d_sae: int, nnz: int, bucket_nnz: int) -> int:
    return max(1, min(d_sae, math.ceil(nnz / max(bucket_nnz, 1))))


def model_flops_per_token(config: Any, blocks: int, ctx_len: int) -> float:
    """Model FLOPs per token of the first ``blocks`` blocks of a (Llama/Gemma-style) config: 2 x
    the matmul parameters, plus attention scores and mixing (causal: half the context on
    average; sliding-window layers at most the window)."""
    d, ff, h = config.hidden_size, config.intermediate_size, config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or h
    hd = getattr(config, "head_dim", None) or d // h
    params = d * h * hd + 2 * d * kv * hd + h * hd * d + 3 * d * ff
    kinds = getattr(config, "layer_types", None) or ["full_attention"] * blocks
    window = getattr(config, "sliding_window", None) or ctx_len
    spans = [ctx_len if kind == "full_attention" else min(ctx_len, window) for kind in kinds[:blocks]]
    return 2.0 * params * blocks + sum(2 * 2 * h * hd * span / 2 for span in spans)


def _gpu_hours(plan: ExtractPlan, tokens: int, flops_per_token: float | None) -> tuple[float | None, str]:
    """From the measured pipeline of the same model (else of Gemma 2 2B), scaled by FLOPs per token
    (the model's blocks plus the SAE encoders) against the measured run's."""
    name = str(plan.model_meta.get("name") or "")
    measured = next(((m, d) for m, d in MEASURED if name.endswith(m)), None)
    if measured is None and flops_per_token is None:
        return None, "no measured throughput for this model"
    model, device = measured or ("gemma-2-2b", "NVIDIA H100 80GB HBM3")
    tok_s, _, source = MEASURED[(model, device)]
    if flops_per_token is None:
        return tokens / tok_s / 3600, f"measured for {model} on {device}: {source}"
    saes = sae_flops_per_token(plan)
    then = _MEASURED_FLOPS[model] + _MEASURED_SAE_FLOPS[model]
    scale = (flops_per_token + saes) / then
    how = (f"model {flops_per_token / 1e9:.2f} + SAE encoders {saes / 1e9:.2f} GFLOP/token against the measured run's "
           f"{_MEASURED_FLOPS[model] / 1e9:.2f} + {_MEASURED_SAE_FLOPS[model] / 1e9:.2f}")
    if measured is not None:
        return tokens / tok_s * scale / 3600, f"measured for {model} on {device} ({source}), scaled by FLOPs: {how}"
    return tokens / tok_s * scale / 3600, (f"scaled by model FLOPs (plus the SAE encoders') per token from the {model} measurement on {device} "
                                           f"({source}): {how}; not measured for this model")


def _bare_forward(plan: ExtractPlan, flops_per_token: float | None) -> tuple[float | None, str]:
    """The device's best rate (tokens/s) the host must keep up with: the measured bare forward of
    the model (:data:`MEASURED`, else Gemma 2 2B's) at its FLOP rate, over the config's model and
    SAE encoder FLOPs per token (78 encoders are more work than the model: the device is slower)."""
    name = str(plan.model_meta.get("name") or "")
    measured = next(((m, d) for m, d in MEASURED if name.endswith(m)), None)
    if measured is None and flops_per_token is None:
        return None, ""
    model, device = measured or ("gemma-2-2b", "NVIDIA H100 80GB HBM3")
    bare = MEASURED[(model, device)][1]
    if flops_per_token is None:
        return bare, f"bare forward of {model} on {device}"
    saes = sae_flops_per_token(plan)
    return bare * _MEASURED_FLOPS[model] / (flops_per_token + saes), (
        f"bare forward of {model} on {device} at its FLOP rate over model {flops_per_token / 1e9:.2f} + SAE encoders "
        f"{saes / 1e9:.2f} GFLOP/token (measured: model {_MEASURED_FLOPS[model] / 1e9:.2f})")
