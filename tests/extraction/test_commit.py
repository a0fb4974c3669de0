"""The host part of a unit (commit_unit): from a worker's filled buffers to the same bytes a run wrote."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from actstore.extraction.plan import plan_extraction
from actstore.extraction.unit import UnitBuffers, commit_unit
from actstore.store.layout import activation_array, code_array
from actstore.store.stats import sae_stats_path, site_stats_path
from actstore.store.store import EXTRACT_STAGE, Store
from tests.coded_store import coded_config
from tests.helpers import store_hashes


def _filled(store: Store, plan, unit: int) -> UnitBuffers:
    """Buffers holding unit ``unit`` exactly as the run's worker held them: its stored arrays and statistics rows."""
    rows = store.grid.contexts(unit)
    buf = UnitBuffers(plan.sites, plan.saes, len(rows), store.meta.ctx_len, torch.device("cpu"))
    raw = lambda path: np.asarray(store.array(path)[rows.start : rows.stop])  # noqa: E731
    row = lambda path: torch.from_numpy(np.asarray(store.read(path, unit)))  # noqa: E731
    for site in plan.sites:
        buf.acts[site.name][...] = raw(activation_array(site.name))
        stats = buf.site_stats[site.name]
        stats.count = int(store.read(site_stats_path(site.name, "count"), unit))
        stats.sum, stats.sumsq = row(site_stats_path(site.name, "sum")), row(site_stats_path(site.name, "sumsq"))
    for sae in plan.saes:
        buf.idx[sae.name][...], buf.val[sae.name][...] = raw(code_array(sae.name, "latent")), raw(code_array(sae.name, "value"))
        buf.l0[sae.name][...] = raw(code_array(sae.name, "l0"))
        stats = buf.sae_stats[sae.name]
        stats.tokens = int(store.read(sae_stats_path(sae.name, "tokens"), unit))
        stats.over_cap = int(store.read(sae_stats_path(sae.name, "over_cap"), unit))
        stats.fired, stats.sum, stats.max = (row(sae_stats_path(sae.name, n)) for n in ("fired", "sum", "max"))
        stats.hist = row(sae_stats_path(sae.name, "hist")).long().reshape(-1)
        stats.l0_hist = row(sae_stats_path(sae.name, "l0_hist"))
    return buf


def test_commit_unit_writes_what_the_run_wrote(coded_store: Path, tmp_path: Path) -> None:
    """A unit's shards, statistics rows and manifest removed from a copy of an extracted store,
    then committed again from buffers holding what the worker held: every array and the manifest
    are as the run left them."""
    shutil.copytree(coded_store, tmp_path / "store")
    store = Store.open(str(tmp_path / "store"), mode="r+")
    plan, _ = plan_extraction(coded_config(coded_store.parent), gpu_workers=False)
    unit, expected = 1, store_hashes(store)
    manifest = store.manifests.read(EXTRACT_STAGE, unit)
    buf = _filled(store, plan, unit)
    for part in ("activations", "codes", "stats"):
        for old in (tmp_path / "store" / part).glob(f"**/units/**/c/{unit}") if part == "stats" else \
                (tmp_path / "store" / part).glob(f"**/c/{unit}"):
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    Path(store.location.local_path, store.manifests.key(EXTRACT_STAGE, unit)).unlink()
    wiped = Store.open(str(tmp_path / "store"), mode="r+")
    assert store_hashes(wiped) != expected and not wiped.manifests.is_done(EXTRACT_STAGE, unit)
    n = commit_unit(wiped, plan, unit, buf, counted=manifest["counted"], run=manifest["run"])
    assert n == manifest["tokens"] == len(store.grid.contexts(unit)) * store.meta.ctx_len
    assert store_hashes(wiped) == expected
    assert wiped.manifests.read(EXTRACT_STAGE, unit) == manifest
