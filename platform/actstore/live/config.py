"""The live session's configuration: a store, and optionally where its model and SAEs load from."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from actstore.config import ModelConfig, StoreConfig

__all__ = ["LiveConfig"]


class LiveConfig(BaseModel):
    """A model and SAEs loaded once to answer features-on-my-text and steering.

    The store's metadata records the model and each SAE's files; give ``model`` or
    ``sae_paths`` only to load them from elsewhere (a GPU dtype, SAE files that moved). SAE
    files are checked against the content hash the store recorded.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    store: StoreConfig = Field(description="The store whose model, SAEs, statistics and index the session uses.")
    model: ModelConfig | None = Field(default=None, description="The model to run; default: the one the store records.")
    saes: list[str] | None = Field(default=None, description="Names of the store's SAEs to load; default: all of them.")
    sae_paths: dict[str, str] = Field(
        default_factory=dict, description="Where to load SAEs from, by name; default: the path the store records.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA when present, else CPU.")
