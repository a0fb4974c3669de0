"""Input normalisation from a store's statistics: the factor that gives unit mean squared norm."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from actstore.errors import ConfigError
from actstore.store.stats import current_totals

if TYPE_CHECKING:
    from actstore.store.store import Store

__all__ = ["input_scale", "site_mean"]


def _totals(store: Store, site: str) -> dict[str, np.ndarray]:
    """count, sum and sumsq of a site over the counted tokens."""
    if site not in {s.name for s in store.meta.sites}:
        raise ConfigError(f"the store at {store.location.url!r} has no site {site!r}")
    return current_totals(store, "sites", site, ("count", "sum", "sumsq"), store.site_stage(site))


def input_scale(store: Store, site: str) -> float:
    """``s`` with ``mean ||s x||^2 = 1`` over the counted tokens (BOS and padding left out)."""
    t = _totals(store, site)
    count, sumsq = float(t["count"].reshape(-1)[0]), float(t["sumsq"].reshape(-1)[0])
    if count == 0 or sumsq == 0:
        raise ConfigError(f"site {site!r} of {store.location.url!r} has no counted tokens to normalise with")
    return math.sqrt(count / sumsq)


def site_mean(store: Store, site: str) -> np.ndarray:
    """Mean activation vector over the counted tokens (float64)."""
    t = _totals(store, site)
    return np.asarray(t["sum"], np.float64) / max(float(t["count"].reshape(-1)[0]), 1.0)
