"""The last step of an index build: how often each token and bigram kept in the token profiles
occurs among the indexed tokens (their precision's denominator), counted by Ray tasks over
groups of units and written by the driver (``actstore.index.profile``)."""

from __future__ import annotations

import numpy as np
import ray

from actstore.cluster.runtime import cluster_cpus, drain
from actstore.index.layout import IndexPlan
from actstore.index.profile import ProfileCounts, corpus_counts, kept_keys, write_corpus_counts
from actstore.store._fs import Location
from actstore.store.store import Store

__all__ = ["count_profile_corpus"]

TASK_RETRIES = 3


def _count(location: Location, plan: IndexPlan, units: list[int], tokens: np.ndarray, bigrams: np.ndarray) -> ProfileCounts:
    store = Store.open(location.url, storage_options=location.storage_options)
    return corpus_counts(store, plan, units, tokens, bigrams)


def count_profile_corpus(store: Store, plan: IndexPlan, *, progress: bool = False) -> None:
    """Fill the profiles' ``token_corpus`` and ``bigram_corpus`` arrays (every reduce done).
    Units go to a few tasks per CPU, each returning one count per kept key."""
    if not plan.profile_top or not plan.units:
        return
    tokens, bigrams = kept_keys(store, plan)
    groups = [g.tolist() for g in np.array_split(np.asarray(plan.units), min(len(plan.units), 2 * cluster_cpus()))]
    task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_count)
    tokens_ref, bigrams_ref = ray.put(tokens), ray.put(bigrams)
    found = drain((task.remote(store.location, plan, g, tokens_ref, bigrams_ref) for g in groups), len(groups),
                  "index profiles", progress=progress)
    total = ProfileCounts(np.asarray(np.sum([f.tokens for f in found], axis=0), np.int64),
                          np.asarray(np.sum([f.bigrams for f in found], axis=0), np.int64))
    write_corpus_counts(store, plan, tokens, bigrams, total)
