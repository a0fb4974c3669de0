"""Planted latents: an SAE whose latents fire on known tokens, the ground truth for measuring
explainers and scorers.

:func:`fit_planted` reads a stored site's activations and the tokens they belong to and fits,
per concept (a set of token ids: `` await``, the digits...), a direction by class-balanced
logistic regression on most contexts, then a threshold between the highest score of a token
outside the concept and the lowest of one inside it. Held-out contexts (every ``holdout``-th)
measure precision and recall; on a real model's residual stream single-token concepts separate
exactly. :func:`save_planted` writes the directions as a Gemma Scope ``params.npz`` (JumpReLU:
``pre = x @ W_enc + b_enc`` fires above ``threshold`` = 1), which ``actstore encode`` adds to the
store like any SAE; its token profiles then show each latent's concept with precision and recall.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from actstore.errors import ConfigError
from actstore.query.tokens import encode_text
from actstore.store.layout import FLAG_BOS, FLAG_PAD, token_array

__all__ = ["Planted", "concept_ids", "fit_planted", "save_planted"]


class Planted(NamedTuple):
    """Fitted directions ``[d_in, n]``, biases ``[n]`` (fire where ``x @ w + b > 0``), the
    concepts' names and token ids, and held-out precision and recall per concept."""

    w: np.ndarray
    b: np.ndarray
    names: list[str]
    token_ids: list[list[int]]
    report: pl.DataFrame


def concept_ids(store: Any, texts: list[str]) -> list[int]:
    """The token id of each text, which must be one token of the store's tokenizer."""
    out = []
    for text in texts:
        ids = encode_text(store, text)
        if len(ids) != 1:
            raise ConfigError(f"{text!r} is {len(ids)} tokens of this store's tokenizer, not one")
        out.append(ids[0])
    return out


def fit_planted(store: Any, site: str, concepts: dict[str, list[int]], *, holdout: int = 5, max_contexts: int = 2000,
                steps: int = 200) -> Planted:
    """Directions firing exactly on each concept's tokens, fitted on the site's stored
    activations of the first ``max_contexts`` contexts (BOS and padding left out) but every
    ``holdout``-th, on which the report measures them (``holdout=0``: fitted and measured on
    all: a planted truth for that store, whatever the directions do elsewhere)."""
    import torch

    rows = slice(0, min(store.meta.n_ctx, max_contexts))
    flags = store.read(token_array("flags"), rows).reshape(-1)
    keep = (flags & (FLAG_BOS | FLAG_PAD)) == 0
    x = store.read(f"activations/{site}", rows).astype(np.float32).reshape(flags.size, -1)[keep]
    ids = store.read(token_array("ids"), rows).reshape(-1)[keep]
    ctx = np.flatnonzero(keep) // store.meta.ctx_len
    test = ctx % holdout == holdout - 1 if holdout else np.zeros(ctx.size, bool)
    mean, std = x[~test].mean(0), x[~test].std(0) + 1e-6
    z = torch.tensor((x - mean) / std)
    measured = test if holdout else ~test  # without held-out contexts, the fit is measured where it was made
    ws, bs, report = [], [], []
    for name, wanted in concepts.items():
        y = torch.tensor(np.isin(ids, wanted), dtype=torch.float32)
        train = torch.tensor(~test)
        if not y[train].any() or y[train].all():
            raise ConfigError(f"concept {name!r} ({wanted}) has no {'' if not y[train].any() else 'non-'}occurrence to fit on")
        w, b = _logistic(z[train], y[train], steps)
        score = (z @ w + b).numpy()
        pos, neg = score[(y.numpy() > 0) & ~test], score[(y.numpy() == 0) & ~test]
        cut = (pos.min() + neg.max()) / 2 if pos.min() > neg.max() else 0.0
        fired, truth = score > cut, y.numpy() > 0
        report.append((name, float((fired & truth & measured).sum() / max((fired & measured).sum(), 1)),
                       float((fired & truth & measured).sum() / max((truth & measured).sum(), 1)),
                       int((truth & measured).sum())))
        ws.append(w.numpy() / std)  # back to the stored scale: (x - mean) / std @ w = x @ (w / std) - mean @ (w / std)
        bs.append(float(b) - float(mean @ (w.numpy() / std)) - cut)
    frame = pl.DataFrame(report, schema={"concept": pl.String(), "precision": pl.Float64(), "recall": pl.Float64(),
                                         "held_out": pl.Int64()}, orient="row")
    return Planted(np.stack(ws, 1).astype(np.float32), np.asarray(bs, np.float32), list(concepts),
                   [list(v) for v in concepts.values()], frame)


def _logistic(z: Any, y: Any, steps: int) -> tuple[Any, Any]:
    """Class-balanced logistic regression (L-BFGS, a little L2): weight and bias, stopped as
    soon as the scores separate the classes (at most ``steps`` iterations)."""
    import torch

    w = torch.zeros(z.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    pos_weight = (y.numel() - y.sum()) / y.sum()
    opt = torch.optim.LBFGS([w, b], max_iter=10, line_search_fn="strong_wolfe")
    inside = y > 0

    def loss() -> Any:
        opt.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y, pos_weight=pos_weight)
        value = value + 1e-4 * (w * w).sum()
        value.backward()
        return value

    for _ in range(max(steps // 10, 1)):
        opt.step(loss)
        with torch.no_grad():
            score = z @ w
            if score[inside].min() > score[~inside].max():
                break
    return w.detach(), b.detach()


def save_planted(planted: Planted, path: Path) -> Path:
    """The directions as a Gemma Scope ``params.npz`` at ``path``: latent ``i`` has code
    ``x @ w_i + b_i + 1`` where that exceeds 1, i.e. where the fitted score is positive."""
    n = planted.w.shape[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, W_enc=planted.w, W_dec=(planted.w / np.linalg.norm(planted.w, axis=0)).T.astype(np.float32),
             b_enc=planted.b + 1, b_dec=np.zeros(planted.w.shape[0], np.float32), threshold=np.ones(n, np.float32))
    return path
