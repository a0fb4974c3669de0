"""The work of one extraction unit: forward, encode, accumulate statistics, write, commit.

A unit's outputs are whole shards (its activations, codes and statistics rows) followed by its
manifest. Running a unit twice writes the same bytes, so Ray's at-least-once retries are safe.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from actstore._faults import DELAY_ENV, fault_point, hold
from actstore.extraction.encoders import ENCODE_TOKENS, EncoderGroups
from actstore.extraction.plan import ExtractPlan
from actstore.models.capture import capture_sites
from actstore.models.loading import torch_dtype
from actstore.saes.encode import Nonzeros, SAEEncoder, sparse_codes
from actstore.store._retry import retries_so_far
from actstore.store.codes import PARTS, latent_dtype
from actstore.store.dtypes import storage_dtype
from actstore.store.layout import activation_array, code_array
from actstore.store.metadata import SaeInfo, SiteInfo
from actstore.store.stats import HIST_EDGES, L0_BINS, N_BINS, sae_stats_path, site_stats_path
from actstore.store.store import Store, Write

__all__ = ["UnitBuffers", "UnitReport", "UnitRunner", "code_writes", "commit_unit", "encode_codes", "tensor_to_storage"]


class UnitReport(NamedTuple):
    """What a worker reports back for a committed unit."""

    unit: int
    n_tokens: int
    seconds: float
    storage_retries: int = 0  # retries this worker process made while the unit ran
    compute_seconds: float = 0.0  # the forward, encode and statistics, with the copies into host buffers
    write_seconds: float = 0.0  # the whole-shard writes and the manifest


def tensor_to_storage(x: torch.Tensor, logical: str, *, out: np.ndarray | None = None) -> np.ndarray:
    """Cast to the logical dtype on the device, then to the numpy storage dtype (bf16 bits as uint16).

    With ``out`` (contiguous, x's shape) the values land there in one copy, straight from the
    device, instead of a temporary array copied again into the unit's buffer.
    """
    x = x.to(_torch_dtype(logical))
    if logical == "bfloat16":
        x = x.view(torch.int16)
    if out is None:
        out = np.empty(tuple(x.shape), storage_dtype(logical))
    torch.from_numpy(out.view(np.int16) if logical == "bfloat16" else out).copy_(x.reshape(out.shape))
    return out


_INTEGERS = {"int32": torch.int32, "uint16": torch.uint16, "uint32": torch.uint32}


def _torch_dtype(logical: str) -> torch.dtype:
    """The torch dtype of a stored value: a model dtype (activations, code values) or an integer (ids, L0)."""
    return _INTEGERS[logical] if logical in _INTEGERS else torch_dtype(logical)


def _host_array(shape: tuple[int, ...], logical: str, pinned: bool) -> np.ndarray:
    """An empty host array of a logical dtype's storage form; page-locked when ``pinned``, so
    copies from a GPU run at DMA speed (pageable memory measured ~10x slower on an H100)."""
    if not pinned:
        return np.empty(shape, storage_dtype(logical))
    tensor = torch.empty(shape, dtype=torch.int16 if logical == "bfloat16" else _torch_dtype(logical), pin_memory=True)
    return tensor.numpy().view(storage_dtype(logical))  # the array keeps the pinned tensor alive


class _SiteStats:
    def __init__(self, d: int, device: torch.device) -> None:
        self.count = 0
        self.sum = torch.zeros(d, dtype=torch.float64, device=device)
        self.sumsq = torch.zeros((), dtype=torch.float64, device=device)

    def update(self, x: torch.Tensor) -> None:
        self.count += int(x.shape[0])
        self.sum += x.sum(0, dtype=torch.float64)
        self.sumsq += x.float().pow(2).sum(-1).sum(dtype=torch.float64)

    def rows(self) -> dict[str, np.ndarray]:
        return {"count": np.array(self.count, np.int64), "sum": self.sum.cpu().numpy(), "sumsq": self.sumsq.cpu().numpy()}


class _SaeStats:
    def __init__(self, d_sae: int, cap: int, device: torch.device) -> None:
        self.d_sae, self.cap = d_sae, cap
        self.tokens = 0
        self.over_cap = 0
        self.fired = torch.zeros(d_sae, dtype=torch.int64, device=device)
        self.sum = torch.zeros(d_sae, dtype=torch.float64, device=device)
        self.max = torch.zeros(d_sae, dtype=torch.float32, device=device)
        self.hist = torch.zeros(d_sae * N_BINS, dtype=torch.int64, device=device)
        self.l0_hist = torch.zeros(L0_BINS, dtype=torch.int64, device=device)
        self.edges = torch.from_numpy(HIST_EDGES).to(device=device, dtype=torch.float32)

    def update(self, nz: Nonzeros, l0: torch.Tensor) -> None:
        """Add the counted tokens' non-zero latents (``nz``) and their L0s."""
        self.tokens += int(l0.shape[0])
        self.over_cap += int((l0 > self.cap).sum())
        cols, values = nz.cols, nz.vals
        self.fired += torch.bincount(cols, minlength=self.d_sae)
        self.sum.index_add_(0, cols, values.double())
        self.max.scatter_reduce_(0, cols, values, reduce="amax")
        bins = torch.bucketize(values, self.edges, right=True)
        self.hist += torch.bincount(cols * N_BINS + bins, minlength=self.d_sae * N_BINS)
        self.l0_hist += torch.bincount(l0.clamp(max=L0_BINS - 1).long(), minlength=L0_BINS)

    def rows(self) -> dict[str, np.ndarray]:
        return {
            "tokens": np.array(self.tokens, np.int64), "over_cap": np.array(self.over_cap, np.int64),
            "fired": self.fired.cpu().numpy(), "sum": self.sum.cpu().numpy(), "max": self.max.cpu().numpy(),
            "hist": self.hist.view(self.d_sae, N_BINS).cpu().numpy().astype(np.int32),
            "l0_hist": self.l0_hist.cpu().numpy(),
        }


class UnitBuffers:
    """Host buffers for one unit's outputs, filled batch by batch, and the unit's statistics.

    The arrays of a finished unit can serve the next one of the same shape (:meth:`reset`):
    every batch overwrites its rows whole. On a GPU worker they are page-locked (``pinned``).
    """

    def __init__(self, sites: Sequence[SiteInfo], saes: Sequence[SaeInfo], n_ctx: int, ctx_len: int, device: torch.device,
                 *, pinned: bool = False) -> None:
        self.sites, self.saes, self.device = tuple(sites), tuple(saes), device
        self.shape = (n_ctx, ctx_len)
        self.acts = {s.name: _host_array((n_ctx, ctx_len, s.d), s.dtype, pinned) for s in sites if s.stored}
        self.idx = {a.name: _host_array((n_ctx, ctx_len, a.code_cap), latent_dtype(a.d_sae), pinned) for a in saes}
        self.val = {a.name: _host_array((n_ctx, ctx_len, a.code_cap), a.value_dtype, pinned) for a in saes}
        self.l0 = {a.name: _host_array((n_ctx, ctx_len), "int32", pinned) for a in saes}
        self.reset()

    def reset(self) -> UnitBuffers:
        """Fresh statistics for the next unit (the arrays are overwritten as it runs)."""
        self.site_stats = {s.name: _SiteStats(s.d, self.device) for s in self.sites}
        self.sae_stats = {a.name: _SaeStats(a.d_sae, a.code_cap, self.device) for a in self.saes}
        return self


def encode_codes(sae: SaeInfo, encoder: SAEEncoder, x: torch.Tensor, mask: torch.Tensor, buf: UnitBuffers,
                 rows: slice) -> None:
    """Encode activations [tokens, d] of ``rows`` into ``buf``'s codes, counting the ``mask``ed tokens' statistics."""
    idx, val, l0 = [], [], []
    for t0 in range(0, x.shape[0], ENCODE_TOKENS):
        nz = encoder.encode_nonzeros(x[t0 : t0 + ENCODE_TOKENS])
        codes = sparse_codes(nz, sae.code_cap)
        idx.append(codes.idx)
        val.append(codes.val)
        l0.append(codes.l0)
        m = mask[t0 : t0 + ENCODE_TOKENS]
        buf.sae_stats[sae.name].update(nz.select(m), codes.l0[m])
    one = len(idx) == 1  # a batch is usually one encode call: no concatenation
    # straight from the device into the unit's buffer, one copy each; ids in the store's narrow
    # type, with 0 in the empty slots (the L0 says which slots hold a latent)
    ids = (idx[0] if one else torch.cat(idx)).clamp_(min=0)
    tensor_to_storage(ids, latent_dtype(sae.d_sae), out=buf.idx[sae.name][rows])
    tensor_to_storage(val[0] if one else torch.cat(val), sae.value_dtype, out=buf.val[sae.name][rows])
    tensor_to_storage(l0[0] if one else torch.cat(l0), "int32", out=buf.l0[sae.name][rows])


class UnitRunner:
    """Runs units for one worker. Safe to call from two threads: the forward/encode part holds a
    lock, the writes do not, so writing unit u overlaps computing unit u+1 while at most two
    units' buffers exist (bounded memory, backpressure through the caller's in-flight limit).
    ``encoders``: the SAEs on the device, or :class:`EncoderGroups` (encoded group by group)."""

    def __init__(self, store: Store, plan: ExtractPlan, model: Any, encoders: Mapping[str, SAEEncoder] | EncoderGroups,
                 device: torch.device, *, run: str = "") -> None:
        self.store, self.plan, self.model, self.device = store, plan, model, device
        self.encoders = encoders if isinstance(encoders, EncoderGroups) else EncoderGroups.resident(encoders)
        self.run_attempt = run  # the run record's attempt id, kept in each manifest
        self._compute = threading.Lock()
        self._delay = float(os.environ.get(DELAY_ENV) or 0)
        self._spare: list[UnitBuffers] = []  # buffers of written units, for the next ones (at most one per unit in flight)
        self._spare_lock = threading.Lock()

    def run(self, unit: int) -> UnitReport:
        """Compute, write whole shards, then commit the manifest (last)."""
        start, retries_before = time.perf_counter(), retries_so_far()
        contexts = self.store.grid.contexts(unit)
        rows = slice(contexts.start, contexts.stop)
        with self._compute:
            computing = time.perf_counter()
            buf, counted = self._compute_unit(unit, rows)
            computed = time.perf_counter()
        try:
            n_tokens = commit_unit(self.store, self.plan, unit, buf, counted=counted, run=self.run_attempt,
                                   delay=self._delay)
        finally:
            with self._spare_lock:
                self._spare.append(buf)
        end = time.perf_counter()
        return UnitReport(unit, n_tokens, end - start, retries_so_far() - retries_before, computed - computing,
                          end - computed)

    def _compute_unit(self, unit: int, rows_all: slice) -> tuple[UnitBuffers, int]:
        plan, device = self.plan, self.device
        tokens = self.store.tokens(rows_all)
        ids = torch.from_numpy(tokens["ids"].astype(np.int64))
        counted = torch.from_numpy((tokens["flags"] & plan.exclude_flags) == 0)
        n, ctx_len = ids.shape
        buf = self._buffers(n, ctx_len)
        batch = plan.config.workers.batch_size
        site_of = {s.name: s for s in plan.captured}
        for b0 in range(0, n, batch):
            rows = slice(b0, min(b0 + batch, n))
            got = capture_sites(self.model, ids[rows].to(device), plan.capture)
            captured = {s.name: got[bare] for s, bare in zip(plan.captured, plan.capture, strict=True)}
            mask = counted[rows].reshape(-1).to(device)
            for site in plan.sites:
                # Everything below reads the activation as stored (cast to the site's dtype
                # first, also when it is not kept): codes and statistics are then exactly what
                # encoding the stored activations gives, bfloat16 sites included.
                x = captured[site.name] = captured[site.name].to(torch_dtype(site.dtype))
                if site.stored:
                    tensor_to_storage(x, site.dtype, out=buf.acts[site.name][rows])
                buf.site_stats[site.name].update(x.reshape(-1, site.d)[mask])
            for site in plan.reads:  # an earlier stage's site: input to this stage's SAEs, never rewritten
                captured[site.name] = captured[site.name].to(torch_dtype(site.dtype))
            for group in self.encoders:  # one group when every SAE's encoder fits on the device
                for sae in plan.saes:
                    if sae.name in group:
                        x = captured[sae.site].reshape(-1, site_of[sae.site].d)
                        encode_codes(sae, group[sae.name], x, mask, buf, rows)
            fault_point("mid_unit", unit)
        return buf, int(counted.sum())

    def _buffers(self, n_ctx: int, ctx_len: int) -> UnitBuffers:
        """A written unit's buffers of this shape (allocating and, on a GPU, pinning them costs
        more than the unit's copies), else new ones."""
        with self._spare_lock:
            for i, spare in enumerate(self._spare):
                if spare.shape == (n_ctx, ctx_len):
                    return self._spare.pop(i).reset()
            self._spare = self._spare[-1:]  # a shorter last unit: keep one set, never grow
        return UnitBuffers(self.plan.sites, self.plan.saes, n_ctx, ctx_len, self.device, pinned=self.device.type == "cuda")


def commit_unit(store: Store, plan: ExtractPlan, unit: int, buf: UnitBuffers, *, counted: int, run: str = "",
                delay: float = 0.0) -> int:
    """Everything a unit needs after the device, on the host: its statistics rows, whole-shard
    writes of its buffers (shard assembly, compression, store writes), then its manifest, last.
    Returns the unit's tokens. ``counted``: tokens its statistics count; ``run``: the run
    record's attempt id; ``delay``: a test-only wait before the manifest. Workers and
    ``benchmarks/bench_host.py`` (the host path replayed at GPU shapes) share this path."""
    contexts = store.grid.contexts(unit)
    rows = slice(contexts.start, contexts.stop)
    _write_unit(store, plan, unit, rows, buf)
    fault_point("before_manifest", unit)
    hold(delay)
    n_tokens = len(contexts) * store.meta.ctx_len
    store.manifests.commit(plan.stage, unit, {"contexts": [rows.start, rows.stop], "tokens": n_tokens,
                                              "counted": counted, "run": run})
    return n_tokens


def _write_unit(store: Store, plan: ExtractPlan, unit: int, rows: slice, buf: UnitBuffers) -> None:
    """Whole-shard writes of everything the unit owns, concurrently (the manifest comes after, separately)."""
    writes: list[Write] = [(activation_array(name), rows, data) for name, data in buf.acts.items()]
    for sae in plan.saes:
        writes += code_writes(sae, unit, rows, buf)
    writes += [(site_stats_path(site.name, name), unit, value)
               for site in plan.sites for name, value in buf.site_stats[site.name].rows().items()]
    if writes and buf.acts:  # the fault point sits after one whole shard, before the others
        store.write(*writes[0])
        fault_point("between_shards", unit)
        writes = writes[1:]
    store.write_many(writes)


def code_writes(sae: SaeInfo, unit: int, rows: slice, buf: UnitBuffers) -> list[Write]:
    """One SAE's codes and statistics rows for a unit, as (array, rows, values)."""
    ids, values, l0 = (code_array(sae.name, part) for part in PARTS)
    return [(ids, rows, buf.idx[sae.name]), (values, rows, buf.val[sae.name]), (l0, rows, buf.l0[sae.name]),
            *((sae_stats_path(sae.name, name), unit, value) for name, value in buf.sae_stats[sae.name].rows().items())]
