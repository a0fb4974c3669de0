"""The training loop: stored activations in (through the shuffled loader), an SAE folder out.

Metrics, recorded every ``log_every`` steps over the steps since the last record: explained
variance ``1 - sum|x - x_hat|^2 / sum|x - mean(x)|^2``, mean L0, and dead latents (none fired
in the last ``dead_tokens`` tokens). They go to the log, to ``metrics.jsonl`` in the output
folder and into the returned :class:`TrainResult`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

from actstore.config import TrainConfig
from actstore.errors import ConfigError
from actstore.loader.activations import ActivationLoader
from actstore.loader.normalize import input_scale, site_mean
from actstore.store.store import Store
from actstore.training.sae import SAELENS_FILES, TrainableSAE, save_saelens

__all__ = ["TrainResult", "train_sae"]

logger = logging.getLogger(__name__)


class TrainResult(NamedTuple):
    path: Path
    steps: int
    tokens: int
    explained_variance: float  # of the last record
    l0: float
    dead: int
    input_scale: float
    history: list[dict[str, float]]


class _Window:
    """Sums over the steps since the last record."""

    def __init__(self) -> None:
        self.sse = self.sst = self.l0 = 0.0
        self.tokens = 0

    def add(self, x: torch.Tensor, x_hat: torch.Tensor, f: torch.Tensor) -> None:
        self.sse += float((x - x_hat).pow(2).sum())
        self.sst += float((x - x.mean(0)).pow(2).sum())
        self.l0 += float((f > 0).sum())
        self.tokens += int(x.shape[0])


def _device(config: TrainConfig) -> torch.device:
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def train_sae(config: TrainConfig, *, progress: bool = False) -> TrainResult:
    """Train on the stored activations of ``config.site`` and save an SAELens folder."""
    store = Store.open(config.store.url, storage_options=dict(config.store.storage_options), backend=config.store.backend)
    site = next((s for s in store.meta.sites if s.name == config.site), None)
    if site is None or not site.stored:
        raise ConfigError(f"the store at {config.store.url!r} holds no activations of {config.site!r}")
    if config.architecture == "topk" and config.k > config.d_sae:
        raise ConfigError(f"k={config.k} is larger than d_sae={config.d_sae}")
    saved = [name for name in SAELENS_FILES if (Path(config.out) / name).exists()]
    if saved and not config.overwrite:
        raise ConfigError(f"{config.out!r} already holds an SAE ({', '.join(saved)}); give another out, or "
                          "overwrite: true to replace it (a store encoded with it then no longer matches its hash)")
    scale = input_scale(store, config.site) if config.normalize else 1.0
    device = _device(config)
    torch.manual_seed(config.seed)
    sae = TrainableSAE(config.architecture, site.d, config.d_sae, k=config.k, bandwidth=config.bandwidth,
                       initial_threshold=config.initial_threshold)
    with torch.no_grad():
        sae.b_dec.copy_(torch.from_numpy(site_mean(store, config.site) * scale).float())
    sae.to(device)
    optimizer = torch.optim.Adam(sae.parameters(), lr=config.lr)
    loader = ActivationLoader(store, config.site, batch_size=config.batch_size, seed=config.seed, scale=scale,
                              mix_chunks=config.mix_chunks)
    last_fired = torch.zeros(config.d_sae, dtype=torch.int64, device=device)
    history: list[dict[str, float]] = []
    window, steps, tokens, t0 = _Window(), 0, 0, time.perf_counter()
    bar = tqdm(total=config.max_tokens, desc="train-sae", unit="tok", unit_scale=True, disable=not progress)
    for _ in range(config.epochs):
        for x in loader:
            x = x.to(device, non_blocking=True)
            f = sae.encode(x)
            x_hat = sae.decode(f)
            mse = (x - x_hat).pow(2).sum(-1).mean()
            loss = mse + config.l0_coefficient * sae.l0(x) if config.architecture == "jumprelu" else mse
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sae.normalize_decoder()
            steps, tokens = steps + 1, tokens + x.shape[0]
            with torch.no_grad():
                last_fired[(f > 0).any(0)] = tokens
                window.add(x, x_hat, f)
            bar.update(x.shape[0])
            if steps % config.log_every == 0:
                history.append(_record(window, steps, tokens, last_fired, config, t0))
                bar.set_postfix(ev=f"{history[-1]['explained_variance']:.3f}", l0=f"{history[-1]['l0']:.1f}")
                window = _Window()
            if config.max_tokens is not None and tokens >= config.max_tokens:
                break
        if config.max_tokens is not None and tokens >= config.max_tokens:
            break
    bar.close()
    if window.tokens:
        history.append(_record(window, steps, tokens, last_fired, config, t0))
    if not history:
        raise ConfigError(f"no training tokens: the store at {config.store.url!r} has no committed activations of {config.site!r}")
    path = save_saelens(sae, config.out, scale=scale, hook_name=config.site,
                        model_name=None if store.meta.model is None else str(store.meta.model.get("name")),
                        context_size=store.meta.ctx_len,
                        extra={"store": config.store.url, "site": config.site, "steps": steps, "tokens": tokens,
                               "seed": config.seed})
    (path / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    last = history[-1]
    return TrainResult(path, steps, tokens, last["explained_variance"], last["l0"], int(last["dead"]), scale, history)


def _record(window: _Window, steps: int, tokens: int, last_fired: torch.Tensor, config: TrainConfig, t0: float) -> dict[str, Any]:
    dead = int(((tokens - last_fired) >= config.dead_tokens).sum()) if tokens >= config.dead_tokens else int((last_fired == 0).sum())
    record = {"step": steps, "tokens": tokens, "explained_variance": 1 - window.sse / max(window.sst, 1e-12),
              "l0": window.l0 / max(window.tokens, 1), "dead": dead, "seconds": time.perf_counter() - t0}
    logger.info("step %(step)d tokens %(tokens)d explained variance %(explained_variance).4f L0 %(l0).1f dead %(dead)d", record)
    return record
