"""How many host cores a GPU worker needs to keep up with its GPU (``actstore plan``).

After the device, a worker's cores do the rest of each unit: statistics rows, shard assembly,
compression, the whole-shard writes and the manifest (:func:`~actstore.extraction.unit.commit_unit`).
``benchmarks/bench_host.py`` replays that at Gemma 2 2B and 9B shapes and measures tokens per
CPU-second (:data:`HOST_MEASURED`). Per token the work is the codes' part (per SAE, in
proportion to its code slots' bytes, statistics included) plus the stored activations' part (per
site, a fixed part and a part per raw byte by compression chain, through the two measured widths); a config's cores are its work
per token times the GPU's bare forward rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actstore.extraction.plan import ExtractPlan
from actstore.store.codes import latent_dtype
from actstore.store.dtypes import storage_dtype

__all__ = ["HOST_MEASURED", "HostCores", "host_cores"]

# Tokens per CPU-second of the host path (two units written at once on 2 cores), by site width
# and case: 3 bfloat16 sites of that width with 3 JumpReLU SAEs of 16,384 latents (code cap 256,
# store format 3: uint16 latent ids and bfloat16 values, the defaults; mean L0 ~80), activations
# through each chain, or codes only. Measured on the otherwise idle 2-core VM (docs/scale.md).
HOST_MEASURED: dict[int, dict[str, float]] = {
    2304: {"codes_only": 147_406, "shuffle-zstd": 15_286, "zstd": 16_402, "none": 26_638},
    3584: {"codes_only": 150_424, "shuffle-zstd": 11_287, "zstd": 11_119, "none": 27_120},
}
HOST_SOURCE = "benchmarks/bench_host.py on an idle 2-core VM, 2026-12-05"
_SITES, _SAES, _SLOT_BYTES = 3, 3, 256 * (2 + 2)  # the measured shape: sites, SAEs, bytes of one token's code slots


@dataclass(frozen=True)
class HostCores:
    """Host cores one GPU needs: in all, for the activations, and for the codes and statistics."""

    cores: float
    activations: float
    codes: float
    gpu_tokens_per_s: float
    source: str

    def render(self) -> str:
        return (f"host cores per GPU: {self.cores:.1f} to keep up with {self.gpu_tokens_per_s:,.0f} tok/s "
                f"(activations {self.activations:.1f}, codes and statistics {self.codes:.1f}; per-core rates from {self.source})")


def _codes_seconds() -> float:
    """CPU-seconds per token of one SAE's codes and statistics at the measured shape."""
    return sum(1 / rates["codes_only"] for rates in HOST_MEASURED.values()) / len(HOST_MEASURED) / _SAES


def _site_seconds(compression: str, raw_bytes: int) -> float:
    """CPU-seconds per token of one stored site of ``raw_bytes`` per token through a chain: a
    fixed part and a part per byte, the line through the two measured widths (their seconds
    beyond the codes, per site); a fixed cost per write is as real as the bytes compressed."""
    (d1, r1), (d2, r2) = sorted(HOST_MEASURED.items())
    y1, y2 = ((1 / r[compression] - 1 / r["codes_only"]) / _SITES for r in (r1, r2))
    x1, x2 = d1 * 2, d2 * 2  # bfloat16 sites
    slope = max((y2 - y1) / (x2 - x1), 0.0)
    return max(y1 + slope * (raw_bytes - x1), 0.0) if slope else max((y1 + y2) / 2, 0.0)


def host_cores(plan: ExtractPlan, gpu_tokens_per_s: float, source: str) -> HostCores:
    """The host cores ``plan``'s units need per GPU forwarding ``gpu_tokens_per_s`` tokens per second."""
    activations = sum(_site_seconds(site.compression, site.d * storage_dtype(site.dtype).itemsize)
                      for site in plan.sites if site.stored)
    codes = sum(_codes_seconds() * sae.code_cap * (np.dtype(latent_dtype(sae.d_sae)).itemsize
                                                   + storage_dtype(sae.value_dtype).itemsize) / _SLOT_BYTES
                for sae in plan.saes)
    return HostCores((activations + codes) * gpu_tokens_per_s, activations * gpu_tokens_per_s, codes * gpu_tokens_per_s,
                     gpu_tokens_per_s, f"{HOST_SOURCE}; {source}")
