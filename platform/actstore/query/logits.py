"""An SAE latent's output logits as a frame: the tokens ``W_dec[l] @ W_U`` promotes and suppresses."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from actstore.errors import LogitsNotFoundError
from actstore.query.windows import store_tokenizer
from actstore.store.logits import read_output_logits

if TYPE_CHECKING:
    from actstore.store.store import Store

__all__ = ["LOGITS_SCHEMA", "output_logits"]

LOGITS_SCHEMA = pl.Schema({"side": pl.String(), "rank": pl.Int32(), "token_id": pl.Int32(), "token": pl.String(),
                           "value": pl.Float32()})


def output_logits(store: Store, sae: str, latent: int) -> pl.DataFrame:
    """Rows for the top tokens (``side="top"``, largest first) then the bottom ones (smallest first)."""
    found = read_output_logits(store, sae, latent)
    if found is None:
        raise LogitsNotFoundError(f"SAE {sae!r} of {store.location.url!r} has no output logits kept: run "
                                  f"`actstore logits {store.location.url} --sae {sae}`")
    logits, _ = found
    tok = store_tokenizer(store)
    ids = np.concatenate([logits.top_ids[0], logits.bottom_ids[0]])
    k = logits.top_ids.shape[1]
    return pl.DataFrame({
        "side": ["top"] * k + ["bottom"] * k, "rank": np.tile(np.arange(k), 2), "token_id": ids,
        "token": [str(tok.decode([int(i)])) for i in ids],
        "value": np.concatenate([logits.top_values[0], logits.bottom_values[0]]),
    }).cast(LOGITS_SCHEMA)
