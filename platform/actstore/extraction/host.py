"""How many host cores a GPU worker needs to keep up with its GPU (``actstore plan``).

After the device, a worker's cores do the rest of each unit: statistics rows, shard assembly,
compression, the whole-shard writes and the manifest (:func:`~actstore.extraction.unit.commit_unit`).
``benchmarks/bench_host.py`` replays that at Gemma 2 2B and 9B shapes and measures tokens per
CPU-second (:data:`HOST_MEASURED`). Per token the work is the codes' part (per SAE, in
proportion to its code slots' bytes, statistics included) plus the stored activations' part (per
raw byte, by compression chain), fitted to the measured cases; a config's cores are its work
per token times the GPU's bare forward rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from actstore.extraction.plan import ExtractPlan
from actstore.store.dtypes import storage_dtype

__all__ = ["HOST_MEASURED", "HostCores", "host_cores"]

# Tokens per CPU-second of the host path (two units written at once on 2 cores), by site width
# and case: 3 bfloat16 sites of that width with 3 JumpReLU SAEs of 16,384 latents (code cap 256,
# float32 values, the default; mean L0 ~80), activations through each chain, or codes only.
# Measured on a shared 2-core VM at a load of 9-18 (other processes competing: docs/scale.md),
# so take them as upper bounds of the work; one fit for both widths is within 15% of each case.
HOST_MEASURED: dict[int, dict[str, float]] = {
    2304: {"codes_only": 42_074, "shuffle-zstd": 11_338, "zstd": 13_301, "none": 16_606},
    3584: {"codes_only": 44_775, "shuffle-zstd": 9_512, "zstd": 10_382, "none": 16_177},
}
HOST_SOURCE = "benchmarks/bench_host.py on a shared 2-core VM, 2026-12-05"
_SITES, _SAES, _SLOT_BYTES = 3, 3, 256 * (4 + 4)  # the measured shape: sites, SAEs, bytes of one token's code slots


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


def _byte_seconds(compression: str) -> float:
    """CPU-seconds per raw activation byte through a chain: the measured cases' seconds beyond
    their codes over their activation bytes, both widths together."""
    seconds = sum(1 / rates[compression] - 1 / rates["codes_only"] for rates in HOST_MEASURED.values())
    return max(seconds / sum(_SITES * d * 2 for d in HOST_MEASURED), 0.0)


def host_cores(plan: ExtractPlan, gpu_tokens_per_s: float, source: str) -> HostCores:
    """The host cores ``plan``'s units need per GPU forwarding ``gpu_tokens_per_s`` tokens per second."""
    activations = sum(site.d * storage_dtype(site.dtype).itemsize * _byte_seconds(site.compression)
                      for site in plan.sites if site.stored)
    codes = sum(_codes_seconds() * sae.code_cap * (4 + storage_dtype(sae.value_dtype).itemsize) / _SLOT_BYTES
                for sae in plan.saes)
    return HostCores((activations + codes) * gpu_tokens_per_s, activations * gpu_tokens_per_s, codes * gpu_tokens_per_s,
                     gpu_tokens_per_s, f"{HOST_SOURCE}; {source}")
