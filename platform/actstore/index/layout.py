"""Where an SAE's feature-major index lives, and the plan it was built from.

``index/<sae>/`` holds one group per latent bucket ``b<k>`` (latents ``[k*L, (k+1)*L)``) with
three arrays: ``offsets`` (``L + 1`` int64, CSR offsets), the tokens (flat index
``ctx * ctx_len + pos``) and ``value`` (the codes' value dtype). Occurrences of latent ``l``
are entries ``offsets[i]:offsets[i+1]`` with ``i = l - k*L``, ranked by value descending, ties
by token ascending. Format 3 stores them in blocks of ``block`` ranks, each in token order with
the tokens as gaps (``token_gap``, see ``index/postings.py``); the older layout stores absolute
tokens in rank order (``token``). Bucket ``k`` is written by one task only, so it owns its objects.
"""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["INDEX_ATTRIBUTE", "IndexPlan", "bucket_array", "index_group", "index_stage", "map_stage", "spill_key",
           "staging_key"]

INDEX_ATTRIBUTE = "actstore_index"


class IndexPlan(BaseModel):
    """What an index covers and how it is split; stored as the index group's attribute."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sae: str = Field(description="SAE whose codes are indexed.")
    d_sae: int = Field(description="Number of latents.")
    latents_per_bucket: int = Field(description="Latents per bucket (the last bucket may hold fewer).")
    n_buckets: int = Field(description="ceil(d_sae / latents_per_bucket).")
    units: list[int] = Field(description="Extraction units indexed (those committed when the build started).")
    exclude_flags: int = Field(description="Token flags left out of the index (BOS | PAD by default).")
    value_dtype: str = Field(description="Logical dtype of the value arrays (that of the codes).")
    block: int | None = Field(default=None, description="Ranks per block of the format 3 layout (entries in token "
                              "order within a block, tokens as gaps: token_gap); None: the older layout (token).")
    profile_top: int = Field(default=0, description="Tokens and bigrams kept per latent in the token profiles "
                             "(``index/<sae>/profile``); 0: an index built before profiles existed.")
    nnz: int | None = Field(default=None, description="Occurrences indexed; set when the build completes.")
    complete: bool = Field(default=False, description="Every bucket is written.")

    @property
    def build_id(self) -> str:
        """A short hash of what the build covers: staging objects of another build never mix in."""
        key = self.model_dump(exclude={"nnz", "complete"})
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]

    def latents(self, bucket: int) -> range:
        start = bucket * self.latents_per_bucket
        return range(start, min(start + self.latents_per_bucket, self.d_sae))


def index_group(sae: str) -> str:
    return f"index/{sae}"


def bucket_array(sae: str, bucket: int, name: str) -> str:
    """``offsets``, ``token_gap`` (``token`` in the older layout) or ``value`` of a bucket."""
    return f"index/{sae}/b{bucket:05d}/{name}"


def map_stage(sae: str) -> str:
    """Manifest stage of the map step (one manifest per extraction unit)."""
    return f"index-{sae}-map"


def index_stage(sae: str) -> str:
    """Manifest stage of the reduce step (one manifest per bucket); also the root-metadata stage."""
    return f"index-{sae}"


def staging_key(plan: IndexPlan, unit: int) -> str:
    return f"_staging/index/{plan.sae}/{plan.build_id}/u{unit:08d}.bin"


def spill_key(plan: IndexPlan, bucket: int, group: int, kind: str = "") -> str:
    """A large bucket's entries from one group of units, by slice (``index/reduce.py``); ``kind``
    ``".profile"``: their token profile records, by hash partition."""
    return f"_staging/index/{plan.sae}/{plan.build_id}/b{bucket:05d}-{group:05d}{kind}.bin"
