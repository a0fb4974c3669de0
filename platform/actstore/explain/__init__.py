"""Explaining latents: manual labels, token profiles in words, automatic explanations, their
scores (an embedding scorer and LLM judges, each checked for carrying signal), and search.

Light to import: the chat backends load torch/transformers or openai only when used.
"""

from actstore.explain.config import (
           EmbeddingConfig,
           ExampleConfig,
           ExplainConfig,
           LocalBackend,
           OpenAIBackend,
           SamplingConfig,
)
from actstore.explain.table import EXPLANATION_SCHEMA, current_explanations, scan_explanations

__all__ = ["EXPLANATION_SCHEMA", "EmbeddingConfig", "ExampleConfig", "ExplainConfig", "LocalBackend", "OpenAIBackend", "SamplingConfig",
           "current_explanations", "scan_explanations"]
