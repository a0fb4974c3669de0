"""Many researchers on one feature browser: concurrent clients against a real ``actstore serve``
on loopback, each opening feature pages of latents nobody opened before.

The server runs in its own process as a user starts it (``actstore serve STORE --port P``, plus
``--server-args``). The clients are one asyncio loop in this process, one TCP connection per
request. In order, on distinct latents (a seeded shuffle of the latents that fire, so no phase
finds another's pages in a cache):

1. one sequential client: the baseline throughput (pages/s) and latency;
2. 20 concurrent clients, then 200: throughput against the sequential client's (the speedup),
   p50 and p95 latency;
3. one page requested again and again: its median time against a new page's (the cache).

The server's resident memory (all its processes) is sampled throughout and printed. The output
ends with the lines ``clients=20 speedup=X.XX`` and ``clients=200 p95_ms=N``.

Run: ``.venv/bin/python benchmarks/bench_web_load.py [--store runs/demo]`` (without a store at that
path a 1M-token synthetic store is built, ~1 minute). ``--pythonpath DIR`` serves with another
checkout's ``platform`` folder (the before figure of a change).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))

from benchmarks.synthetic import scratch

SEQUENTIAL = 30  # pages the sequential client opens
PER_CLIENT = {20: 8, 200: 2}  # pages each concurrent client opens
REPEAT = 30  # requests of the repeated page


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def synthetic_store(tokens: int = 1_000_000) -> str:
    """A synthetic store (``bench_index.py``'s kind, 4,096 latents) with its index and a tokenizer."""
    import ray

    from actstore.api import Store
    from actstore.cluster.index import run_index
    from benchmarks.bench_web import synthetic_tokenizer
    from benchmarks.synthetic import make_store

    root = scratch("bench-web-load")
    url = str(root / "store")
    make_store(url, tokens, ctx_len=1024, sae=("synthetic", 4096, 60, 128))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    run_index(url, "synthetic")
    ray.shutdown()
    synthetic_tokenizer(Store.open(url, mode="r+"), root / "tokenizer")
    return url


class Server:
    """``actstore serve`` in a child process, stopped on exit; samples its memory."""

    def __init__(self, url: str, args: list[str], pythonpath: str | None) -> None:
        self.port = _free_port()
        env = os.environ.copy()
        if pythonpath:
            env["PYTHONPATH"] = str(Path(pythonpath).resolve())
        cmd = [sys.executable, "-c", "import sys; from actstore.cli import main; sys.exit(main())", "serve", url,
               "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.base = f"http://127.0.0.1:{self.port}"
        self.peak_rss = 0
        self._stop = threading.Event()
        for _ in range(600):
            try:
                urllib.request.urlopen(self.base + "/static/app.css", timeout=1)
                break
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(f"actstore serve exited: {self.proc.stderr.read() if self.proc.stderr else ''}") from None
                time.sleep(0.2)
        threading.Thread(target=self._sample, daemon=True).start()

    def rss(self) -> int:
        """Resident bytes of the server and its children (worker processes)."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        except psutil.Error:
            return 0

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_rss = max(self.peak_rss, self.rss())

    def close(self) -> None:
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def _get(port: int, path: str) -> float:
    """One GET over a fresh connection; returns its time in ms (fails on a status other than 200)."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    status = data.split(b" ", 2)[1] if data.startswith(b"HTTP/") else b"?"
    if status != b"200":
        raise SystemExit(f"{path}: HTTP {status.decode()}: {data[:400]!r}")
    return (time.perf_counter() - t0) * 1e3


async def _clients(port: int, paths: list[list[str]]) -> tuple[float, list[float]]:
    """Each list of ``paths`` is one client opening its pages one after another, all clients at
    once; returns (wall seconds, every request's ms)."""
    async def client(mine: list[str]) -> list[float]:
        return [await _get(port, p) for p in mine]

    t0 = time.perf_counter()
    done = await asyncio.gather(*(client(p) for p in paths))
    return time.perf_counter() - t0, [ms for one in done for ms in one]


def phase(port: int, paths: list[list[str]]) -> dict[str, float]:
    wall, ms = asyncio.run(_clients(port, paths))
    return {"pages": len(ms), "wall_s": wall, "per_s": len(ms) / wall, "p50": statistics.median(ms),
            "p95": float(np.percentile(ms, 95)), "max": max(ms)}


def latents_to_open(url: str) -> tuple[str, list[int]]:
    """The store's first SAE and its latents that fire, in a seeded random order."""
    import actstore

    store = actstore.open(url)
    sae = store.meta.saes[0].name
    density = store.sae(sae).density()
    alive = density.filter(density["count"] > 0)["latent"].to_numpy()
    return sae, np.random.default_rng(0).permutation(alive).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="runs/demo", help="the store to serve (built synthetic when missing)")
    parser.add_argument("--server-args", default="", help="more arguments to `actstore serve`, e.g. '--workers 1'")
    parser.add_argument("--pythonpath", help="serve with this checkout's platform folder (a before figure)")
    args = parser.parse_args()
    url = args.store if Path(args.store).exists() else synthetic_store()
    sae, order = latents_to_open(url)
    need = 2 + SEQUENTIAL + sum(n * k for n, k in PER_CLIENT.items())
    if len(order) < need:
        raise SystemExit(f"the store has {len(order)} latents that fire; this benchmark opens {need} distinct ones")
    page = lambda latent: f"/sae/{sae}/latent/{latent}"  # noqa: E731
    server = Server(url, args.server_args.split(), args.pythonpath)
    load = os.getloadavg()
    try:
        print(f"store {url}, SAE {sae}; server `actstore serve {args.server_args}`".rstrip() + f" (pid {server.proc.pid}); "
              f"load average before {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; {os.cpu_count()} CPUs")
        asyncio.run(_clients(server.port, [["/", page(order.pop()), "/api/store"]]))  # arrays opened, tokenizer loaded
        idle = server.rss()
        results = {1: phase(server.port, [[page(order.pop()) for _ in range(SEQUENTIAL)]])}
        for n, k in PER_CLIENT.items():
            results[n] = phase(server.port, [[page(order.pop()) for _ in range(k)] for _ in range(n)])
        again = order.pop()
        asyncio.run(_clients(server.port, [[page(again)]]))
        repeated = phase(server.port, [[page(again)] * REPEAT])
    finally:
        server.close()
    base = results[1]["per_s"]
    print(f"{'clients':>7} {'pages':>6} {'wall s':>7} {'pages/s':>8} {'speedup':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for n, r in results.items():
        print(f"{n:>7} {r['pages']:>6.0f} {r['wall_s']:>7.1f} {r['per_s']:>8.2f} {r['per_s'] / base:>8.2f} "
              f"{r['p50']:>8.0f} {r['p95']:>8.0f} {r['max']:>8.0f}")
    print(f"repeated page: median {repeated['p50']:.1f} ms against {results[1]['p50']:.1f} ms for a new page "
          f"({results[1]['p50'] / repeated['p50']:.1f}x)")
    print(f"server memory: {idle / 2**20:.0f} MiB after the first pages, peak {server.peak_rss / 2**20:.0f} MiB under load")
    load = os.getloadavg()
    print(f"load average after {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"clients=20 speedup={results[20]['per_s'] / base:.2f}")
    print(f"clients=200 p95_ms={results[200]['p95']:.0f}")


if __name__ == "__main__":
    main()
