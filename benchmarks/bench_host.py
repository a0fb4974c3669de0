"""The host path after the GPU, replayed on CPU at Gemma 2 2B and 9B shapes: how many cores one GPU needs.

One unit's host buffers are filled as a GPU worker's are after its device-to-host copies (64
contexts x 1024 tokens; 3 residual sites in bfloat16, d = 2304 for 2B, 3584 for 9B, Gaussian
values; 3 JumpReLU-like SAEs of 16,384 latents at a mean L0 of ~80 (code cap 256, bfloat16 values, the
default), Zipf-distributed latents with
exponential values). The codes and statistics are made by the worker's own functions
(``encode_codes``: code packing and statistics, which run on the device in a GPU worker) from
synthetic non-zeros, so the buffers hold what a worker's hold. Then the part timed, the host's
work per unit, is the worker's own ``commit_unit``: statistics rows, shard assembly, compression,
whole-shard writes to a local Zarr store and the manifest, for three cases:

- ``default``: the 3 sites' activations (``shuffle-zstd``, the default) and the 3 SAEs' codes;
- ``codes_only``: the codes and statistics only (``store_activations: false``);
- ``raw``: activations uncompressed (``compression: none``) and the codes;
- ``zstd``: activations through plain zstd, for ``actstore plan``'s table of rates.

Measured per case, alternating in each round: one unit written with the process pinned to one
core (every thread of it: ``sched_setaffinity``), then one unit and two units at once (two
writer threads, as two units in flight) on two cores. Per core: tokens per CPU-second of the
process (its CPU time, so other processes on a shared machine do not count). Cores one GPU
needs = the GPU's bare truncated forward (docs/scale.md: H100, 2B 80,962 tok/s, 9B 25,130) /
tokens per CPU-second with two writers, valid while the work spreads over cores: the speed-up
from 1 to 2 cores (wall clock, meaningful on an otherwise idle machine only) and, robust to other
load, the busiest thread's tokens per CPU-second ("1 thread"), the most one worker process can
write whatever its cores ("procs/GPU": the forward over that; above 1, one worker falls behind).

Run: ``.venv/bin/python benchmarks/bench_host.py [--models 2b,9b] [--rounds 3] [--profile]``
(~3 GB of memory and disk for 9B; the store folder is removed at exit). ``--profile`` instead samples
default-case unit writes with py-spy (all threads, native frames) and prints where the time goes
and how much of it holds the GIL.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))

from actstore.config import ExtractConfig
from actstore.extraction.arrays import create_extract_arrays
from actstore.extraction.plan import ExtractPlan, ModelPlan
from actstore.extraction.unit import UnitBuffers, commit_unit, encode_codes, tensor_to_storage
from actstore.saes.encode import Nonzeros, SAEEncoder
from actstore.store.metadata import SaeInfo, SiteInfo
from actstore.store.sitenames import BASE
from actstore.store.store import Store
from benchmarks.synthetic import make_store, scratch

# (d_model, layers of the 3 sites, the bare truncated forward on one H100: docs/scale.md, GPU figures)
MODELS: dict[str, tuple[int, tuple[int, int, int], float]] = {
    "2b": (2304, (6, 12, 19), 80_962.0),
    "9b": (3584, (9, 20, 31), 25_130.0),
}
CASES = {"default": ("shuffle-zstd", True), "codes_only": ("shuffle-zstd", False), "raw": ("none", True),
         "zstd": ("zstd", True)}  # the last for actstore plan's table (extraction/host.py), not in the summary lines
N_CTX, CTX_LEN, D_SAE, MEAN_L0, CODE_CAP = 64, 1024, 16_384, 80, 256


def host_plan(model: str, compression: str, stored: bool) -> ExtractPlan:
    """The plan a worker gets for the Gemma 2 shape (sites and SAEs as plan_extraction resolves them,
    without fetching the model's config or the SAEs' weights: only their shapes matter here)."""
    d, layers, _ = MODELS[model]
    sites = [f"blocks.{layer}.hook_resid_post" for layer in layers]
    path = f"google/gemma-scope-{model}-pt-res/layer_{{}}/width_16k/average_l0_{MEAN_L0}"
    config = ExtractConfig.model_validate({
        "store": {"url": "unused"}, "corpus": {"paths": ["unused"]},
        "model": {"id": f"google/gemma-2-{model}", "dtype": "bfloat16"},
        "context": {"ctx_len": CTX_LEN, "contexts_per_unit": N_CTX},
        "sites": [{"name": s, "compression": compression, "store_activations": stored} for s in sites],
        "saes": [{"name": f"res{layer}", "site": s, "path": path.format(layer), "code_cap": CODE_CAP}
                 for layer, s in zip(layers, sites, strict=True)],
    })
    site_infos = tuple(SiteInfo(name=s.name, d=d, dtype="bfloat16", stored=s.store_activations,
                                compression=s.compression) for s in config.sites)
    sae_infos = tuple(SaeInfo(name=a.name, site=a.site, architecture="jumprelu", d_in=d, d_sae=D_SAE, code_cap=a.code_cap,
                              value_dtype=a.value_dtype, source=a.path, origin="hub", sha256="0", input_dtype="bfloat16")
                      for a in config.saes)
    models = {BASE: ModelPlan(config.model, "gemma2", "bfloat16", "eager")}
    return ExtractPlan(config, models, "cuda", site_infos, sae_infos, exclude_flags=1)


class SyntheticEncoder(SAEEncoder):
    """An encoder whose non-zeros are drawn, not computed: JumpReLU-like codes, a mean L0 of 80
    (each token ~[40, 128] draws, ~7% of them repeats) over Zipf-distributed latents, values threshold + exponential."""

    def __init__(self, d_sae: int, seed: int) -> None:  # no weights: nothing is multiplied
        self.d_sae, self.rng = d_sae, np.random.default_rng(seed)
        p = 1.0 / np.arange(1, d_sae + 1) ** 0.8
        self.cdf = np.cumsum(p / p.sum())
        self.perm = self.rng.permutation(d_sae)  # frequency rank -> latent id

    def encode_nonzeros(self, x: torch.Tensor) -> Nonzeros:
        n = int(x.shape[0])
        l0 = self.rng.integers(MEAN_L0 // 2, MEAN_L0 * 8 // 5 + 1, size=n)  # ~7% are drawn twice
        rows = np.repeat(np.arange(n), l0)
        ranks = np.minimum(np.searchsorted(self.cdf, self.rng.random(rows.size)), self.d_sae - 1)
        key = np.unique(rows * self.d_sae + self.perm[ranks])  # row-major, each latent once per token
        vals = (0.5 + self.rng.exponential(2.0, key.size)).astype(np.float32)
        return Nonzeros(torch.from_numpy(key // self.d_sae), torch.from_numpy(key % self.d_sae), torch.from_numpy(vals), n)


def filled_buffers(plan: ExtractPlan, seed: int = 0) -> tuple[UnitBuffers, int, float]:
    """One unit's buffers as a GPU worker holds them after its copies (every site stored), by the
    worker's own functions; returns them, the counted tokens and the seconds this took on CPU."""
    start = time.perf_counter()
    buf = UnitBuffers(plan.sites, plan.saes, N_CTX, CTX_LEN, torch.device("cpu"))
    n, d = N_CTX * CTX_LEN, plan.sites[0].d
    mask = torch.ones(n, dtype=torch.bool)
    mask[::CTX_LEN] = False  # the BOS of each context is not counted
    gen = torch.Generator().manual_seed(seed)
    x = torch.empty(n, d, dtype=torch.bfloat16)
    for t0 in range(0, n, 8192):
        x[t0 : t0 + 8192] = torch.randn(min(8192, n - t0), d, generator=gen)
    buf.site_stats[plan.sites[0].name].update(x[mask])
    for i, site in enumerate(plan.sites):  # the sites hold the same values (their statistics too)
        tensor_to_storage(x.view(N_CTX, CTX_LEN, d), site.dtype, out=buf.acts[site.name])
        buf.site_stats[site.name] = buf.site_stats[plan.sites[0].name]
        encode_codes(plan.saes[i], SyntheticEncoder(D_SAE, seed + i), x[:, :1], mask, buf, slice(0, N_CTX))
    return buf, int(mask.sum()), time.perf_counter() - start


_ALL = set(os.sched_getaffinity(0))  # the CPUs this process may use at start


def pin(cores: int) -> None:
    """Every thread of this process (zarr's event loop and pools included; threads started later
    inherit it) on the first ``cores`` of its CPUs."""
    cpus = set(sorted(_ALL)[:cores])
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # a thread that just ended
            os.sched_setaffinity(int(tid), cpus)


def write_units(store: Store, plan: ExtractPlan, buf: UnitBuffers, counted: int, units: list[int]) -> tuple[float, float]:
    """Wall and CPU seconds of committing ``units`` at once, one writer thread each (as units in flight).
    Their earlier shards are removed first: a worker writes a unit's shards once, and zarr reads a
    shard that exists before rewriting it."""
    for unit in units:
        for part in ("activations", "codes", "stats"):
            for old in Path(store.location.local_path, part).glob(f"**/c/{unit}"):
                shutil.rmtree(old) if old.is_dir() else old.unlink()
    wall, cpu = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=commit_unit, args=(store, plan, u, buf), kwargs={"counted": counted}) for u in units]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - wall, time.process_time() - cpu


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread of this process, by thread name and id (from /proc)."""
    out, tick = {}, os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    for tid in os.listdir("/proc/self/task"):
        try:
            name = names.get(int(tid)) or Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        out[f"{name}/{tid}"] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


def busiest_thread(before: dict[str, float], after: dict[str, float]) -> tuple[str, float]:
    """The thread that ran longest between two :func:`thread_cpu` readings, and its seconds."""
    name, seconds = max(((k, v - before.get(k, 0.0)) for k, v in after.items()), key=lambda kv: kv[1])
    return name.partition("/")[0], seconds


def measure(model: str, rounds: int, root: Path, buf: UnitBuffers, counted: int) -> dict[str, dict[str, float]]:
    """Per case: tokens/s on 1 core, tokens per CPU-second, 2-core rates with 1 and 2 writers, stored bytes per unit."""
    tokens = N_CTX * CTX_LEN
    prepared = {}
    for case, (compression, stored) in CASES.items():
        plan = host_plan(model, compression, stored)
        store = make_store(str(root / f"{model}-{case}"), 2 * tokens, ctx_len=CTX_LEN, per_unit=N_CTX)
        create_extract_arrays(store, plan, config_record={})
        case_buf = buf if stored else copy.copy(buf)
        if not stored:
            case_buf.acts = {}
        prepared[case] = (Store.open(store.location.url, mode="r+"), plan, case_buf)
    seen: dict[str, dict[str, list[float]]] = {c: {"1core": [], "cpu1": [], "thread": [], "2core_1w": [], "2core_2w": [], "cpu2": []}
                                               for c in CASES}
    names: dict[str, str] = {}
    for _ in range(rounds):
        for case, (store, plan, case_buf) in prepared.items():
            pin(1)
            threads = thread_cpu()
            wall, cpu = write_units(store, plan, case_buf, counted, [0])
            busiest, seconds = busiest_thread(threads, thread_cpu())
            seen[case]["1core"].append(tokens / wall)
            seen[case]["cpu1"].append(tokens / cpu)
            seen[case]["thread"].append(tokens / seconds)
            names[case] = busiest
            pin(2)
            wall, _ = write_units(store, plan, case_buf, counted, [1])
            seen[case]["2core_1w"].append(tokens / wall)
            wall, cpu = write_units(store, plan, case_buf, counted, [0, 1])
            seen[case]["2core_2w"].append(2 * tokens / wall)
            seen[case]["cpu2"].append(2 * tokens / cpu)
    out: dict[str, dict[str, Any]] = {}
    for case, (store, _, _) in prepared.items():
        out[case] = {k: statistics.median(v) for k, v in seen[case].items()}
        out[case]["busiest"] = names[case]
        out[case]["bytes"] = _stored_bytes(Path(store.location.local_path), unit=0)
    return out


def _stored_bytes(root: Path, unit: int) -> int:
    """Bytes of one unit's shard objects (activations and codes) in a local store."""
    return sum(f.stat().st_size for part in ("activations", "codes") for f in (root / part).glob(f"**/c/{unit}/**/*")
               if f.is_file())


def profile(model: str, root: Path, buf: UnitBuffers, counted: int) -> None:
    """py-spy over default-case unit writes (native frames): where the busy threads' time goes, and
    the share of it holding the GIL (py-spy --gil), which bounds the cores one process can use."""
    plan = host_plan(model, *CASES["default"])
    store = make_store(str(root / f"{model}-profile"), N_CTX * CTX_LEN, ctx_len=CTX_LEN, per_unit=N_CTX)
    create_extract_arrays(store, plan, config_record={})
    store = Store.open(store.location.url, mode="r+")
    samples = {}
    for mode in ("busy", "gil"):
        out = root / f"{model}-{mode}.txt"
        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(os.getpid()), "--native",
                                "--format", "raw", "--rate", "100", "--output", str(out), *(["--gil"] if mode == "gil" else [])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        for _ in range(2):
            write_units(store, plan, buf, counted, [0])
        spy.send_signal(2)
        spy.wait(60)
        samples[mode] = _own_samples(out)
    busy, gil = sum(samples["busy"].values()) or 1, sum(samples["gil"].values())
    print(f"  profile ({model}, default case, py-spy --native): {busy} busy samples, the GIL held in {gil} "
          f"({100 * gil / busy:.0f}%: one process can use at most ~{busy / max(gil, 1):.1f} cores); by part:")
    for part, count in sorted(samples["busy"].items(), key=lambda kv: -kv[1]):
        print(f"  {100 * count / busy:5.1f}%  {part}")


# what a sample's stack is doing, first match wins (substrings of py-spy's frames)
PARTS = (("compression: blosc shuffle + zstd", ("BloscCodec._encode",)), ("compression: zstd", ("ZstdCodec._encode",)),
         ("zarr: inner chunk filled with the fill value (np.full)", ("NDBuffer.create",)),
         ("zarr: inner chunk copied out of the shard", ("_merge_chunk_array",)),
         ("zarr: shard assembly (concatenate)", ("Buffer.combine",)),
         ("file writes", ("LocalStore", "_atomic_write", "_put (zarr")), ("statistics rows", ("rows (actstore",)),
         ("the manifest", ("manifests.py",)))
WAITING = ("Condition.wait", "_wait_for_tstate_lock", "thread.py:81)", "EpollSelector.select", "Thread.join", "Future.result")


def _own_samples(raw: Path) -> dict[str, int]:
    """Samples by part of the host path (:data:`PARTS`) from py-spy's collapsed stacks, waiting threads left out."""
    parts: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        python = [f for f in stack.split(";") if ".py:" in f]
        if python and any(w in python[-1] for w in WAITING):
            continue
        part = next((name for name, marks in PARTS if any(m in stack for m in marks)),
                    "other: " + (python[-1] if python else stack.split(";")[-1])[:80])
        parts[part] = parts.get(part, 0) + int(count)
    return dict(sorted(parts.items(), key=lambda kv: -kv[1])[:12])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="2b,9b")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    if len(_ALL) < 2:
        raise SystemExit("bench_host needs 2 CPUs (it compares 1 core with 2)")
    root = scratch("bench-host")
    results: dict[str, Any] = {}
    for model in args.models.split(","):
        plan = host_plan(model, *CASES["default"])
        buf, counted, fill_s = filled_buffers(plan)
        gpu = MODELS[model][2]
        print(f"\nGemma 2 {model.upper()} shape: {N_CTX} x {CTX_LEN} tokens per unit, 3 sites d={MODELS[model][0]} bf16, "
              f"3 SAEs of {D_SAE:,} latents, mean L0 {float(buf.l0[plan.saes[0].name].mean()):.1f}, code cap {CODE_CAP}, "
              f"{plan.saes[0].value_dtype} values "
              f"(buffers filled in {fill_s:.1f} s on CPU: code packing and statistics, device work on a GPU worker)")
        if args.profile:
            profile(model, root, buf, counted)
            continue
        rates = measure(model, args.rounds, root, buf, counted)
        print(f"{'case':11} {'1 core':>9} {'per CPU-s':>10} {'2c 1 unit':>10} {'2c 2 units':>11} {'per CPU-s':>10} "
              f"{'speed-up':>9} {'cores/GPU':>9} {'1 thread':>9} {'procs/GPU':>9} {'MB/unit':>8}")
        for case, r in rates.items():
            r["speedup"] = r["2core_2w"] / r["1core"]
            r["cores_per_gpu"] = gpu / r["cpu2"]
            r["procs_per_gpu"] = gpu / r["thread"]
            print(f"{case:11} {r['1core']:9,.0f} {r['cpu1']:10,.0f} {r['2core_1w']:10,.0f} {r['2core_2w']:11,.0f} "
                  f"{r['cpu2']:10,.0f} {r['speedup']:8.2f}x {r['cores_per_gpu']:9.1f} {r['thread']:9,.0f} {r['procs_per_gpu']:9.1f} "
                  f"{r['bytes'] / 1e6:8.1f}  (busiest thread: {r['busiest']})")
        results[model] = rates
        del buf
    print(f"\ntokens/s: '1 core' wall, 'per CPU-s' tokens per CPU-second on 1 core; 2 cores with 1 unit and with 2 units "
          f"written at once (wall, then per CPU-second); speed-up = 2 units on 2 cores / 1 core; cores/GPU = the H100 bare forward / tokens per "
          f"CPU-second with 2 writers; '1 thread': tokens per CPU-second of the busiest thread (on 1 core), the most one process can write whatever its cores; procs/GPU = the forward / that; load {os.getloadavg()[0]:.2f} (1 min)")
    for model, rates in results.items():
        print(f"cores_per_gpu model={model} default={rates['default']['cores_per_gpu']:.1f} "
              f"codes_only={rates['codes_only']['cores_per_gpu']:.1f} raw={rates['raw']['cores_per_gpu']:.1f}")
    return results


if __name__ == "__main__":
    main()
