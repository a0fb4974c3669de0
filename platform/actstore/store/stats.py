"""Statistics arrays: one row per unit (written by the unit's worker), merged at finalize.

Per site: ``count`` (tokens counted), ``sum`` (vector sum, float64), ``sumsq`` (sum of squared
norms). Per SAE: ``tokens``, per latent ``fired``, ``sum``, ``max`` and ``hist`` (counts of
non-zero values on the fixed bins of :data:`HIST_EDGES`), ``l0_hist`` (tokens by L0, the last
bin counting L0 >= 1024) and ``over_cap`` (tokens whose L0 exceeded the code cap).
Per-unit rows live under ``.../units/<name>``; finalize writes the merged ``.../<name>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from actstore.store.layout import UnitGrid, create_unit_array

if TYPE_CHECKING:
    import zarr

    from actstore.store.store import Store

__all__ = ["HIST_EDGES", "L0_BINS", "SAE_STATS", "SITE_STATS", "create_stats_arrays", "current_totals", "merge_stats", "sae_stats_path",
           "site_stats_path"]

# Non-zero values v fall in bin searchsorted(HIST_EDGES, v, side="right"): bin 0 is (0, 1e-3),
# bins 1..56 are 8 per decade up to 1e4, bin 57 is [1e4, inf).
HIST_EDGES = np.logspace(-3, 4, 57)
N_BINS = len(HIST_EDGES) + 1
L0_BINS = 1025

# name -> (per-unit dtype, how units merge)
SITE_STATS = {"count": ("int64", "sum"), "sum": ("float64", "sum"), "sumsq": ("float64", "sum")}
SAE_STATS = {
    "tokens": ("int64", "sum"),
    "fired": ("int64", "sum"),
    "sum": ("float64", "sum"),
    "max": ("float32", "max"),
    "hist": ("int32", "sum"),
    "l0_hist": ("int64", "sum"),
    "over_cap": ("int64", "sum"),
}
PER_LATENT = ("fired", "sum", "max", "hist")  # SAE statistics with a latent axis first


def site_stats_path(site: str, name: str, *, unit: bool = True) -> str:
    return f"stats/sites/{site}/{'units/' if unit else ''}{name}"


def sae_stats_path(sae: str, name: str, *, unit: bool = True) -> str:
    return f"stats/saes/{sae}/{'units/' if unit else ''}{name}"


def _site_tail(name: str, d: int) -> tuple[int, ...]:
    return (d,) if name == "sum" else ()


def _sae_tail(name: str, d_sae: int) -> tuple[int, ...]:
    return {"fired": (d_sae,), "sum": (d_sae,), "max": (d_sae,), "hist": (d_sae, N_BINS), "l0_hist": (L0_BINS,)}.get(name, ())


def create_stats_arrays(group: zarr.Group, grid: UnitGrid, sites: dict[str, int], saes: dict[str, int]) -> None:
    """Per-unit statistics arrays for sites {name: d} and SAEs {name: d_sae}."""
    for site, d in sites.items():
        for name, (dtype, _) in SITE_STATS.items():
            create_unit_array(group, site_stats_path(site, name), grid, _site_tail(name, d), dtype, per_token=False)
    for sae, d_sae in saes.items():
        for name, (dtype, _) in SAE_STATS.items():
            create_unit_array(group, sae_stats_path(sae, name), grid, _sae_tail(name, d_sae), dtype, per_token=False,
                              attributes={"hist_edges": HIST_EDGES.tolist()} if name == "hist" else None)


def merge_stats(group: zarr.Group, units: list[int], sites: list[str], saes: list[str], *, block: int = 64) -> None:
    """Merge the per-unit rows of ``units`` into the totals (streaming over blocks of units)."""
    import zarr

    jobs: list[tuple[str, str, str]] = [(site_stats_path(s, n), site_stats_path(s, n, unit=False), how)
                                        for s in sites for n, (_, how) in SITE_STATS.items()]
    jobs += [(sae_stats_path(s, n), sae_stats_path(s, n, unit=False), how) for s in saes for n, (_, how) in SAE_STATS.items()]
    for src_path, dst_path, how in jobs:
        src = group[src_path]
        assert isinstance(src, zarr.Array)
        total: Any = None
        for i in range(0, len(units), block):
            rows = np.asarray(src.get_orthogonal_selection((np.asarray(units[i : i + block]),)))
            part = rows.max(axis=0) if how == "max" else rows.sum(axis=0, dtype=np.float64 if rows.dtype.kind == "f" else np.int64)
            total = part if total is None else (np.maximum(total, part) if how == "max" else total + part)
        if total is None:
            total = np.zeros(src.shape[1:], dtype=src.dtype)
        total = np.asarray(total)
        if src.dtype == np.int32:  # per-unit histograms are int32; their sum over units may not fit
            total = total.astype(np.int64)
        # the attributes describe the merged array's own bytes (its dtype may differ from the rows')
        attrs = {**dict(src.attrs), "logical_dtype": str(total.dtype), "per_token": False}
        out = zarr.create_array(store=group.store, name=f"{group.path}/{dst_path}".strip("/"), shape=total.shape or (1,),
                                chunks=total.shape or (1,), dtype=total.dtype, overwrite=True, attributes=attrs)
        out[...] = total.reshape(total.shape or (1,))


def current_totals(store: Store, kind: Literal["sites", "saes"], owner: str, names: tuple[str, ...], stage: str,
                   latents: slice | None = None) -> dict[str, np.ndarray]:
    """Totals of a site's or SAE's statistics: the merged arrays once ``stage`` is finalized,
    else the rows of its committed units merged on the fly (a store still being written).
    ``latents``: only these latents of an SAE's per-latent statistics (a feature page reads one
    latent's histogram row, not the whole ``[d_sae, bins]`` array)."""
    path, how = (site_stats_path, SITE_STATS) if kind == "sites" else (sae_stats_path, SAE_STATS)
    pick = lambda n: (latents,) if latents is not None and kind == "saes" and n in PER_LATENT else ()  # noqa: E731
    info = store.meta.stages.get(stage)
    if info is not None and info.complete:
        return {n: np.asarray(store.array(path(owner, n, unit=False))[pick(n) or ...]) for n in names}
    units = np.asarray(store.units_done(stage), dtype=np.int64)
    out: dict[str, Any] = {}
    for n in names:
        arr = store.array(path(owner, n))
        for i in range(0, max(units.size, 1), 64):  # blocks of units: bounded memory
            rows = np.asarray(arr.get_orthogonal_selection((units[i : i + 64], *pick(n))))
            if how[n][1] == "max":
                part = rows.max(axis=0, initial=0)
                out[n] = part if n not in out else np.maximum(out[n], part)
            else:
                part = rows.sum(axis=0, dtype=np.float64 if rows.dtype.kind == "f" else np.int64)
                out[n] = part if n not in out else out[n] + part
    return out
